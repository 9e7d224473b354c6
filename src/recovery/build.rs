//! Building a recovery point into a file, verified before it takes the target's name.
//!
//! The writer ([`crate::export::convert`]) renames its output into place when complete. A point
//! whose marker carries a digest must not appear under the target's name until that digest is
//! proved, so the build goes to a private folder beside the target (`.NAME.XXXXXX.verifying`),
//! the check runs there, and only a disk that passes is renamed onto the target — the same
//! filesystem, so the rename is atomic and an old target stays intact until then. On a mismatch,
//! an error or a crash, only the private folder is left behind (removed when the error unwinds).

use super::overlay::{PointImage, block_digests, root_of};
use crate::digest::{BLOCK_SIZE, Digest, Manifest};
use crate::error::{Error, Result};
use crate::export::{ConvertOptions, ConvertReport, convert};
use crate::image::DiskImage;
use crate::journal::Journal;
use std::fs::File;
use std::path::Path;

/// What building a point did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// The point's id.
    pub point: String,
    /// Its time.
    pub time: String,
    /// The writer's report.
    pub convert: ConvertReport,
    /// The root digest of the built disk (computed when the marker carries a digest to check,
    /// or a manifest was asked for).
    pub root: Option<Digest>,
    /// Whether it matches the marker's digest (`None`: the marker has none).
    pub verified: Option<bool>,
}

/// Converts `src` to `output` as [`convert`] does, but calls `check` on the finished file's
/// report before it takes `output`'s name: when `check` fails, nothing appears under `output`
/// (an existing file there is left as it was) and its error is returned.
///
/// # Errors
/// As [`convert`]; `check`'s error; the rename into place fails.
pub fn convert_verified(
    src: &dyn DiskImage,
    output: &Path,
    opts: &ConvertOptions,
    check: impl FnOnce(&ConvertReport) -> Result<()>,
) -> Result<ConvertReport> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = output
        .file_name()
        .ok_or_else(|| Error::argument("the output path names no file").with_path(output))?;
    let private = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".verifying")
        .tempdir_in(dir)
        .map_err(|e| Error::io("creating a folder for the build", e).with_path(dir))?;
    let staged = private.path().join(name);
    let report = convert(src, &staged, opts)?;
    check(&report)?;
    std::fs::rename(&staged, output)
        .map_err(|e| Error::io("renaming the verified output into place", e).with_path(output))?;
    if opts.sync {
        // Make the rename durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(report)
}

/// Builds point `seq` of `journal` over `base` into `output` with the writer's options; when
/// the marker carries a digest, the built disk's manifest is computed in the same pass and must
/// match it before the file takes `output`'s name.
///
/// # Errors
/// The point is not available, a payload is corrupt, the output cannot be written, or the
/// marker's digest does not match (nothing appears under `output` then).
pub fn build_point(
    base: &dyn DiskImage,
    journal: &Journal,
    seq: u64,
    output: &Path,
    opts: &ConvertOptions,
) -> Result<BuildReport> {
    let p = super::point_record(journal, seq)?.clone();
    let img = PointImage::new(base, journal, seq)?;
    let mut o = *opts;
    // Hashing costs a SHA-256 pass over the data: done when there is a digest to check (or
    // the caller asks for the manifest), skipped otherwise.
    o.manifest = opts.manifest || p.marker.digest.is_some();
    let mut root = None;
    let report = convert_verified(&img, output, &o, |report| {
        let Some(manifest) = &report.manifest else {
            return Ok(());
        };
        let r = disk_root(&img, report, manifest)?;
        if let Some(want) = p.marker.digest
            && want != r
        {
            return Err(Error::checksum(format!(
                "point rp-{seq}: the built disk has root digest {r}, the marker records \
                 {want}; nothing was written under the output's name"
            ))
            .with_path(journal.dir()));
        }
        root = Some(r);
        Ok(())
    })?;
    let verified = p.marker.digest.map(|_| true);
    Ok(BuildReport {
        point: crate::journal::point_id(seq),
        time: crate::journal::format_time(p.time_ms),
        convert: report,
        root,
        verified,
    })
}

/// The root digest of the disk `img` itself, from the manifest of its output: the manifest
/// covers the output's virtual size (a VHD is padded to a whole MiB), so when padded the root
/// is recomputed from the disk's own blocks.
fn disk_root(img: &dyn DiskImage, report: &ConvertReport, manifest: &Manifest) -> Result<Digest> {
    let len = img.len();
    if report.virtual_size == len {
        return manifest.root_digest();
    }
    let mut d = block_digests(manifest);
    d.truncate(Manifest::block_count(len) as usize);
    if let Some(last) = d.last_mut()
        && !len.is_multiple_of(BLOCK_SIZE)
    {
        // The padded last block hashed padding too: hash the disk's part again.
        let off = len / BLOCK_SIZE * BLOCK_SIZE;
        let mut buf = vec![0u8; (len - off) as usize];
        img.read_exact_at(&mut buf, off)?;
        *last = crate::digest::Digest::of(&buf);
    }
    Ok(root_of(&d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MemImage;
    use crate::journal::{
        Consistency, JournalInfo, JournalWriter, Marker, ScanOptions, WriterOptions,
    };
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};

    const DISK: u64 = 3 << 20;

    /// A journal over a `DISK`-byte base with one write and a marker carrying `digest` (the
    /// point's true root when `None`).
    fn journal(dir: &Path, digest: Option<Digest>) -> (MemImage, Journal, u64) {
        let mut base = vec![0u8; DISK as usize];
        base[..4096].fill(7);
        let base_root = super::super::base_digests(&MemImage::new(base.clone()))
            .unwrap()
            .1;
        let mut point = base.clone();
        point[1 << 20..(1 << 20) + 8192].fill(9);
        let true_root = super::super::base_digests(&MemImage::new(point)).unwrap().1;
        let info = JournalInfo {
            disk_id: [3; 16],
            disk_size: DISK,
            sector_size: 512,
            base_root,
        };
        let jdir = dir.join("j");
        let mut w = JournalWriter::create(
            &jdir,
            info,
            WriterOptions {
                sync: false,
                ..WriterOptions::default()
            },
        )
        .unwrap();
        w.write(1000, 1 << 20, &[9u8; 8192]).unwrap();
        let seq = w
            .marker(
                2000,
                &Marker {
                    consistency: Consistency::Crash,
                    digest: Some(digest.unwrap_or(true_root)),
                    group: None,
                    label: String::new(),
                },
            )
            .unwrap();
        w.finish().unwrap();
        let j = Journal::open(&jdir, ScanOptions::default()).unwrap();
        (MemImage::new(base), j, seq)
    }

    /// Names created in or moved into a folder, as inotify reports them: every appearance,
    /// however brief, is queued.
    struct Watch {
        fd: libc::c_int,
    }

    impl Watch {
        fn new(dir: &Path) -> Watch {
            // SAFETY: inotify_init1 takes flags only and returns a descriptor or -1.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            assert!(fd >= 0, "inotify_init1");
            let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
            // SAFETY: `path` is a NUL-terminated string alive for the call; `fd` is ours.
            let wd = unsafe {
                libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO)
            };
            assert!(wd >= 0, "inotify_add_watch");
            Watch { fd }
        }

        fn names(&self) -> Vec<String> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: `buf` is valid for writes of its length; `fd` is an open descriptor.
                let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return out;
                }
                let mut at = 0usize;
                let head = std::mem::size_of::<libc::inotify_event>();
                while at + head <= n as usize {
                    // The event header: wd (4), mask (4), cookie (4), len (4), then the name.
                    let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap());
                    let name = &buf[at + head..at + head + len as usize];
                    let name = name.split(|&b| b == 0).next().unwrap_or_default();
                    out.push(String::from_utf8_lossy(name).into_owned());
                    at += head + len as usize;
                }
            }
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            // SAFETY: closing the descriptor this value owns, once.
            unsafe { libc::close(self.fd) };
        }
    }

    /// Polls the folder's listing every millisecond until told to stop: the names it saw.
    fn poll(dir: PathBuf, stop: &AtomicBool) -> Vec<String> {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        seen
    }

    fn opts() -> ConvertOptions<'static> {
        ConvertOptions {
            sync: false,
            ..ConvertOptions::default()
        }
    }

    #[test]
    fn a_mismatching_point_never_appears_under_the_targets_name() {
        let d = tempfile::tempdir().unwrap();
        let (base, j, seq) = journal(d.path(), Some(Digest([0xEE; 32])));
        let out_dir = d.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let watch = Watch::new(&out_dir);
        let stop = AtomicBool::new(false);
        let target = out_dir.join("disk.vhd");
        let (seen, err) = std::thread::scope(|s| {
            let poller = s.spawn(|| poll(out_dir.clone(), &stop));
            let err = build_point(&base, &j, seq, &target, &opts()).unwrap_err();
            stop.store(true, Ordering::Relaxed);
            (poller.join().unwrap(), err)
        });
        assert!(err.to_string().contains("the marker records"), "{err}");
        let names = watch.names();
        assert!(!names.is_empty(), "inotify saw the build's own files");
        assert!(!names.iter().any(|n| n == "disk.vhd"), "{names:?}");
        assert!(!seen.iter().any(|n| n == "disk.vhd"), "{seen:?}");
        assert!(!target.exists());
        // Nothing is left behind either.
        assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
    }

    #[test]
    fn a_mismatch_leaves_an_existing_target_intact() {
        let d = tempfile::tempdir().unwrap();
        let (base, j, seq) = journal(d.path(), Some(Digest([0xEE; 32])));
        let target = d.path().join("disk.raw");
        std::fs::write(&target, b"the old output").unwrap();
        assert!(build_point(&base, &j, seq, &target, &opts()).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"the old output");
    }

    #[test]
    fn a_matching_point_is_renamed_into_place_once_checked() {
        let d = tempfile::tempdir().unwrap();
        let (base, j, seq) = journal(d.path(), None);
        let out_dir = d.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let watch = Watch::new(&out_dir);
        let target = out_dir.join("disk.vhd");
        let r = build_point(&base, &j, seq, &target, &opts()).unwrap();
        assert_eq!(r.verified, Some(true));
        assert!(target.exists());
        // The only entries made in the folder: the private build folder, then the target.
        let names = watch.names();
        assert_eq!(
            names.last().map(String::as_str),
            Some("disk.vhd"),
            "{names:?}"
        );
        assert!(
            names[..names.len() - 1]
                .iter()
                .all(|n| n.ends_with(".verifying"))
        );
        assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1);
    }
}
