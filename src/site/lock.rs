//! Advisory file locks (`flock`): held by a process while it advances the site's clock or does
//! a job's work. The kernel drops them when the process dies, which is how a task left running
//! by a killed process is told from one another process is still doing.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

fn open(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening a lock file", e).with_path(path))
}

impl FileLock {
    /// Takes the lock at `path`, waiting for another holder to let go.
    ///
    /// # Errors
    /// The file cannot be opened or locked.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        let file = open(path)?;
        // SAFETY: flock on a file descriptor this function owns.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r != 0 {
            return Err(Error::io("locking", std::io::Error::last_os_error()).with_path(path));
        }
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Takes the lock at `path` if nobody holds it.
    ///
    /// # Errors
    /// The file cannot be opened, or locking fails for another reason than a holder.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let file = open(path)?;
        // SAFETY: flock on a file descriptor this function owns.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(Error::io("locking", e).with_path(path));
        }
        Ok(Some(FileLock {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the lock and removes its file.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let held = FileLock::acquire(&p).unwrap();
        // flock locks belong to the open file description: a second open sees the holder.
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        drop(held);
        let again = FileLock::try_acquire(&p).unwrap().unwrap();
        again.release();
        assert!(!p.exists());
    }
}
