//! Writing disks out: the fixed VHD that Azure accepts as a page blob, or a raw image.
//!
//! [`convert`] walks the source's extent map in 512 KiB chunks in parallel (rayon, positional
//! writes; the source's bytes are looked at in place when it can lend them — a memory-mapped raw
//! file — and read into one buffer per worker otherwise, so memory does not grow with the disk).
//! Holes are never read; data is checked for zeros in 4 KiB pieces (`sparse_size`) and only
//! non-zero runs are written, so the output is sparse wherever the input has holes or zeros. The block manifest, if asked for, is
//! computed from the same buffers in the same pass. The output is written to a temporary file
//! beside the target, synced, and renamed into place: a failed conversion leaves nothing under
//! the target's name.
//!
//! [`convert_in_place`] turns a raw file into a fixed VHD by growing it to a whole MiB and
//! appending the footer: no data is copied.

pub mod vhd_view;

use crate::digest::{BLOCK_SIZE, Manifest, ManifestBuilder};
use crate::error::{Error, Result, ResultExt};
use crate::image::Detected;
use crate::image::vhd::{FOOTER_SIZE, Footer, VHD_EPOCH_UNIX};
use crate::image::{DiskImage, ExtentMap, FixedVhd, RawImage, bytes_at};
use crate::progress::Progress;
use rayon::prelude::*;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One MiB: Azure requires a VHD's virtual size to be a whole number of MiB.
pub const MIB: u64 = 1 << 20;
/// The largest virtual size we write as a VHD: 32 TiB, the managed-disk upload limit.
pub const MAX_VHD_SIZE: u64 = 32 << 40;
/// Work unit of the parallel copy: one manifest block, so a block is hashed in one piece, and
/// small enough that a worker's buffer stays in a 512 KiB L2 cache when the source must be read
/// (measured: 2 MiB chunks were slower; with a mapped source the size hardly matters).
const CHUNK: u64 = BLOCK_SIZE;
// The manifest is recorded per chunk: a chunk must be exactly one manifest block.
const _: () = assert!(CHUNK == BLOCK_SIZE);
/// Default granularity of zero detection: the page size of the file systems we write to, and
/// qemu-img's default (`-S 4k`). Aligned all-zero pieces of this size are left as holes.
pub const DEFAULT_SPARSE_SIZE: usize = 4096;
/// From this hole granularity up, workers take turns writing (see [`convert`]).
const TAKE_TURNS_FROM: usize = 64 * 1024;

pub use crate::bytes::is_zero;

/// `size` rounded up to a whole MiB.
pub fn align_mib(size: u64) -> u64 {
    size.div_ceil(MIB).saturating_mul(MIB)
}

/// The output format of a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// A fixed VHD, virtual size rounded up to a whole MiB.
    Vhd,
    /// A raw image of exactly the source's size.
    Raw,
}

/// How to convert.
#[derive(Clone, Copy)]
pub struct ConvertOptions<'a> {
    /// What to write.
    pub format: OutputFormat,
    /// The VHD's unique id; random when `None`.
    pub unique_id: Option<[u8; 16]>,
    /// The VHD's timestamp (seconds since 2000-01-01 UTC); now when `None`.
    pub timestamp: Option<u32>,
    /// Sync the output to stable storage before renaming it into place.
    pub sync: bool,
    /// Compute the block manifest of the output disk in the same pass.
    pub manifest: bool,
    /// Granularity of holes: aligned all-zero pieces of this many bytes are not written. A power
    /// of two from 512 to 512 KiB; larger pieces mean fewer, longer writes (faster) but fewer holes.
    pub sparse_size: usize,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
}

impl Default for ConvertOptions<'_> {
    fn default() -> Self {
        ConvertOptions {
            format: OutputFormat::Vhd,
            unique_id: None,
            timestamp: None,
            sync: true,
            manifest: false,
            sparse_size: DEFAULT_SPARSE_SIZE,
            progress: &crate::progress::NoProgress,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    /// Output format.
    pub format: OutputFormat,
    /// The source's virtual size.
    pub input_size: u64,
    /// The output's virtual size (the source's, rounded up to a whole MiB for a VHD).
    pub virtual_size: u64,
    /// Zero bytes added to reach a whole MiB.
    pub padding: u64,
    /// Length of the output file.
    pub file_len: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Data bytes written to the output (zeros are left as holes).
    pub bytes_written: u64,
    /// The VHD's unique id, if a VHD was written.
    pub unique_id: Option<String>,
    /// The block manifest, if asked for.
    #[serde(skip)]
    pub manifest: Option<Manifest>,
}

/// The footer for a new fixed VHD of `size` bytes with the given or fresh id and time.
///
/// # Errors
/// The system's random source fails.
pub fn new_footer(
    size: u64,
    unique_id: Option<[u8; 16]>,
    timestamp: Option<u32>,
) -> Result<Footer> {
    let id = match unique_id {
        Some(id) => id,
        None => {
            let mut id = [0u8; 16];
            getrandom::fill(&mut id)
                .map_err(|e| Error::io("generating a unique id", std::io::Error::other(e)))?;
            id[6] = (id[6] & 0x0f) | 0x40; // RFC 4122 version 4
            id[8] = (id[8] & 0x3f) | 0x80; // RFC 4122 variant
            id
        }
    };
    let ts = timestamp.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        u32::try_from(now.saturating_sub(VHD_EPOCH_UNIX)).unwrap_or(u32::MAX)
    });
    Ok(Footer::new_fixed(size, id, ts))
}

/// Checks that `virtual_size` can be a VHD Azure accepts.
fn check_vhd_size(virtual_size: u64) -> Result<()> {
    if virtual_size > MAX_VHD_SIZE {
        return Err(Error::limit(format!(
            "a {virtual_size}-byte disk is larger than the 32 TiB ({MAX_VHD_SIZE} bytes) \
             that Azure accepts for a managed disk"
        )));
    }
    Ok(())
}

fn check_sparse_size(sparse_size: usize) -> Result<()> {
    if !sparse_size.is_power_of_two() || !(512..=CHUNK as usize).contains(&sparse_size) {
        return Err(Error::argument(format!(
            "sparse size {sparse_size}: expected a power of two from 512 to {CHUNK}"
        )));
    }
    Ok(())
}

/// Reads every data chunk of `src` in parallel and calls `sink(offset, bytes)` for each run of
/// pieces of `sparse_size` bytes that are not all zero; records the manifest on the way (its size may exceed the source's: the
/// rest reads as zeros). Returns the
/// bytes read and the bytes passed to the sink.
///
/// # Errors
/// The first read or sink error (other workers stop early).
pub fn for_each_data_run(
    src: &dyn DiskImage,
    extents: &ExtentMap,
    manifest: Option<&ManifestBuilder>,
    sparse_size: usize,
    progress: &dyn Progress,
    sink: &(dyn Fn(u64, &[u8]) -> Result<()> + Sync),
) -> Result<(u64, u64)> {
    check_sparse_size(sparse_size)?;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let size = src.len();
    let disk_len = manifest.map_or(size, |m| m.size().max(size));
    let total: u64 = extents
        .data_chunks(CHUNK)
        .map(|c| (disk_len - c * CHUNK).min(CHUNK))
        .sum();
    progress.begin("converting", total);
    let read = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    // Every chunk is attempted and every failure kept, so a source with several bad blocks
    // (an EBS snapshot, a failing disk) is reported whole, not one block per run. Only a
    // cancellation stops the remaining chunks.
    let chunk = |buf: &mut Vec<u8>, c: u64| {
        convert_chunk(
            buf,
            c,
            src,
            extents,
            disk_len,
            manifest,
            sparse_size,
            progress,
            sink,
            &read,
            &written,
        )
    };
    let failures: std::sync::Mutex<Vec<Error>> = std::sync::Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    extents.data_chunks(CHUNK).par_bridge().for_each_init(
        || vec![0u8; CHUNK as usize],
        |buf, c| {
            if stop.load(Relaxed) {
                return;
            }
            let r = chunk(buf, c);
            if let Err(e) = r {
                if e.kind() == crate::ErrorKind::Interrupted {
                    stop.store(true, Relaxed);
                }
                crate::sync::lock(&failures).push(e);
            }
        },
    );
    progress.finish();
    let mut failures = crate::sync::into_inner(failures);
    if let Some(i) = failures
        .iter()
        .position(|e| e.kind() == crate::ErrorKind::Interrupted)
    {
        return Err(failures.swap_remove(i));
    }
    failures.sort_by_key(|e| e.offset().unwrap_or(u64::MAX));
    match failures.len() {
        0 => Ok((read.into_inner(), written.into_inner())),
        1 => Err(failures.remove(0)),
        n => {
            let first = failures.remove(0);
            let list: Vec<String> = failures.iter().take(20).map(|e| e.to_string()).collect();
            let more = if n > 21 {
                format!("\n  … and {} more", n - 21)
            } else {
                String::new()
            };
            Err(Error::new(
                first.kind(),
                format!(
                    "{n} reads failed; the first: {}\n  {}{more}",
                    first.message(),
                    list.join("\n  ")
                ),
            )
            .with_offset(first.offset().unwrap_or(0)))
        }
    }
}

/// Converts chunk `c` of `src`: reads it (or borrows it), passes its non-zero runs to `sink`,
/// records its manifest block.
#[allow(clippy::too_many_arguments)]
fn convert_chunk(
    buf: &mut [u8],
    c: u64,
    src: &dyn DiskImage,
    extents: &ExtentMap,
    disk_len: u64,
    manifest: Option<&ManifestBuilder>,
    sparse_size: usize,
    progress: &dyn Progress,
    sink: &(dyn Fn(u64, &[u8]) -> Result<()> + Sync),
    read: &std::sync::atomic::AtomicU64,
    written: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    if progress.cancelled() {
        return Err(Error::cancelled());
    }
    let start = c * CHUNK;
    // The chunk may reach past the source (into a VHD's padding, for the manifest).
    let len = (disk_len - start).min(CHUNK) as usize;
    // Look at the source's bytes in place when it can lend them (a mapped raw file);
    // otherwise read the data extents into this worker's buffer, zeros elsewhere.
    let buf = bytes_at(src, extents, start, &mut buf[..len])?;
    read.fetch_add(
        extents
            .range(start, len as u64)
            .filter(|e| e.kind.is_data())
            .map(|e| e.len)
            .sum(),
        Relaxed,
    );
    // Coalesce runs of non-zero pieces into one write each. The chunk is one manifest
    // block, so this one zero scan also tells the manifest whether the block is zero.
    let mut run: Option<usize> = None;
    let mut any_data = false;
    let emit = |r: usize, end: usize| -> Result<()> {
        sink(start + r as u64, &buf[r..end])?;
        written.fetch_add((end - r) as u64, Relaxed);
        Ok(())
    };
    for p in (0..len).step_by(sparse_size) {
        if is_zero(&buf[p..(p + sparse_size).min(len)]) {
            if let Some(r) = run.take() {
                emit(r, p)?;
            }
        } else if run.is_none() {
            run = Some(p);
            any_data = true;
        }
    }
    if let Some(r) = run {
        emit(r, len)?;
    }
    if let Some(m) = manifest
        && any_data
    {
        m.record_digest(start / BLOCK_SIZE, crate::digest::sha256(buf));
    }
    // Done with these bytes: a mapped input drops them from memory (RSS stays bounded).
    src.release(start, len as u64);
    progress.advance(len as u64);
    Ok(())
}

/// A file being written under a temporary name beside its target; removed if dropped before
/// [`PendingOutput::commit`].
pub(crate) struct PendingOutput {
    tmp: tempfile::NamedTempFile,
}

impl PendingOutput {
    pub(crate) fn create(target: &Path) -> Result<Self> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .ok_or_else(|| Error::argument("the output path names no file").with_path(target))?;
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".partial")
            // Like any new file: 0666 less the umask (tempfile's default is 0600).
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| Error::io("creating a temporary output file", e).with_path(dir))?;
        Ok(PendingOutput { tmp })
    }

    pub(crate) fn file(&self) -> &File {
        self.tmp.as_file()
    }

    pub(crate) fn commit(self, target: &Path, sync: bool) -> Result<()> {
        let f = self.tmp.as_file();
        if sync {
            f.sync_all()
                .map_err(|e| Error::io("syncing the output", e).with_path(target))?;
        }
        // Replacing an existing file: rename(2) over it makes ext4 (auto_da_alloc) start and
        // wait for write-back of the whole new file, and frees the old one inside the call
        // (waiting for its own write-back: an output just written with --no-sync). Exchange the
        // two names atomically instead (renameat2 RENAME_EXCHANGE: the target always names a
        // complete file, the old one or the new one), then remove the old file, now under the
        // temporary name, on a thread of its own; its unwritten pages are dropped, not written.
        let exchanged = std::fs::symlink_metadata(target).is_ok_and(|m| m.is_file())
            && exchange(self.tmp.path(), target).is_ok();
        if exchanged {
            let old = self.tmp.into_temp_path();
            let mut pending = crate::sync::lock(&RETIRING);
            // Threads that are done are joined as we go, so a long run keeps few.
            let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|t| t.is_finished());
            *pending = running;
            for t in done {
                let _ = t.join();
            }
            // If no thread can be had, the closure (and with it the old file's name) is dropped
            // by the failed spawn, which removes the file here and now.
            if let Ok(t) = std::thread::Builder::new()
                .name("remove-replaced".into())
                .spawn(move || drop(old))
            {
                pending.push(t);
            }
        } else {
            self.tmp.persist(target).map_err(|e| {
                Error::io("renaming the output into place", e.error).with_path(target)
            })?;
        }
        if sync && let Some(dir) = target.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Make the rename durable too.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Threads removing replaced outputs (see [`PendingOutput::commit`]), from every thread.
static RETIRING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Swaps the names `a` and `b` atomically (both must exist on one file system).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths that live across the call; renameat2 reads them only.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits until every replaced output is removed (a program calls it before it exits, so no
/// old file is left under its temporary name).
pub fn wait_for_replaced_outputs() {
    let pending = std::mem::take(&mut *crate::sync::lock(&RETIRING));
    for t in pending {
        let _ = t.join();
    }
}

/// Writes `data` to `path` through a temporary file beside it, renamed into place when complete.
///
/// # Errors
/// The file cannot be written or renamed.
pub fn write_file_atomic(path: &Path, data: &[u8], sync: bool) -> Result<()> {
    let out = PendingOutput::create(path)?;
    pwrite_all(out.file(), data, 0).path(path)?;
    out.commit(path, sync)
}

fn pwrite_all(file: &File, data: &[u8], offset: u64) -> Result<()> {
    file.write_all_at(data, offset)
        .map_err(|e| Error::io("writing", e).with_offset(offset))
}

/// Converts `src` to a fixed VHD or raw image at `output`.
///
/// # Errors
/// The source cannot be read, the disk is too large for a VHD, or the output cannot be written;
/// nothing is left under `output`'s name then.
pub fn convert(src: &dyn DiskImage, output: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    check_sparse_size(opts.sparse_size)?;
    let input_size = src.len();
    let (virtual_size, footer) = match opts.format {
        OutputFormat::Vhd => {
            let size = align_mib(input_size);
            check_vhd_size(size)?;
            (
                size,
                Some(new_footer(size, opts.unique_id, opts.timestamp)?),
            )
        }
        OutputFormat::Raw => (input_size, None),
    };
    let file_len = virtual_size + if footer.is_some() { FOOTER_SIZE } else { 0 };
    let extents = src.extents()?;
    let out = PendingOutput::create(output)?;
    out.file()
        .set_len(file_len)
        .map_err(|e| Error::io("sizing the output", e).with_path(output))?;
    let builder = opts.manifest.then(|| ManifestBuilder::new(virtual_size));
    let file = out.file();
    // Writes to one file serialize on its inode lock. With long writes (coarse holes), taking
    // turns here lets the waiting worker sleep or scan instead of spinning in the kernel, which
    // measured as a third of all cycles (4 GiB sample: 0.40 s instead of 0.46 s, half the CPU).
    // With 4 KiB holes the writes are short and concurrent writers were faster (0.53 s vs 0.65 s).
    let turn = std::sync::Mutex::new(());
    let take_turns = opts.sparse_size >= TAKE_TURNS_FROM;
    let sink = |off: u64, data: &[u8]| {
        let _turn = take_turns.then(|| crate::sync::lock(&turn));
        pwrite_all(file, data, off)
    };
    let (bytes_read, bytes_written) = for_each_data_run(
        src,
        &extents,
        builder.as_ref(),
        opts.sparse_size,
        opts.progress,
        &sink,
    )
    .path(output)?;
    if let Some(f) = &footer {
        pwrite_all(file, &f.encode(), virtual_size).path(output)?;
    }
    out.commit(output, opts.sync)?;
    Ok(ConvertReport {
        format: opts.format,
        input_size,
        virtual_size,
        padding: virtual_size - input_size,
        file_len,
        bytes_read,
        bytes_written,
        unique_id: footer.map(|f| crate::image::vhd::format_uuid(&f.unique_id)),
        manifest: builder.map(ManifestBuilder::finish),
    })
}

/// Turns the raw file at `path` into a fixed VHD where it lies: the file grows (with a hole) to a
/// whole MiB and gets a footer. No data is copied.
///
/// If writing the footer fails, the file is cut back to its old length.
///
/// # Errors
/// The file is not a writable regular file, already ends with a VHD footer, or is too large.
pub fn convert_in_place(path: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening the file for writing (--in-place)", e).with_path(path))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("reading file metadata", e).with_path(path))?;
    if !meta.file_type().is_file() {
        return Err(Error::argument(
            "--in-place needs a regular file (a block device cannot grow to hold a footer); \
             convert to a new file instead",
        )
        .with_path(path));
    }
    let input_size = meta.len();
    // Only a raw disk may get a footer: a VHD would get a second one, and a qcow2 or VHDX file
    // would become a "disk" of container bytes.
    match crate::image::detect(&RawImage::open(path)?).path(path)? {
        Detected::Raw => {}
        Detected::VhdFooterAtEnd | Detected::VhdCookieMisplaced(_) => {
            return Err(Error::argument(
                "the file already ends with a VHD footer; refusing to add a second one",
            )
            .with_offset(input_size.saturating_sub(FOOTER_SIZE))
            .with_path(path));
        }
        other => {
            return Err(Error::argument(format!(
                "--in-place turns a raw disk into a VHD, but this file is {}; convert it to a \
                 new file instead",
                match other {
                    Detected::Qcow2 => "a qcow2 image",
                    Detected::Vhdx => "a VHDX image",
                    _ => "a dynamic or differencing VHD",
                }
            ))
            .with_path(path));
        }
    }
    let virtual_size = align_mib(input_size);
    check_vhd_size(virtual_size).path(path)?;
    let footer = new_footer(virtual_size, opts.unique_id, opts.timestamp)?;
    let result = (|| -> Result<()> {
        file.set_len(virtual_size)
            .map_err(|e| Error::io("growing the file to a whole MiB", e))?;
        pwrite_all(&file, &footer.encode(), virtual_size)?;
        if opts.sync {
            file.sync_all().map_err(|e| Error::io("syncing", e))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = file.set_len(input_size);
        return Err(e.with_path(path));
    }
    drop(file);
    let manifest = if opts.manifest {
        let vhd = FixedVhd::new(RawImage::open(path)?).path(path)?;
        Some(Manifest::compute(&vhd)?)
    } else {
        None
    };
    Ok(ConvertReport {
        format: OutputFormat::Vhd,
        input_size,
        virtual_size,
        padding: virtual_size - input_size,
        file_len: virtual_size + FOOTER_SIZE,
        bytes_read: 0,
        bytes_written: FOOTER_SIZE,
        unique_id: Some(crate::image::vhd::format_uuid(&footer.unique_id)),
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ExtentKind, MemImage};
    use proptest::prelude::*;

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 10_000];
        assert!(is_zero(&v));
        assert!(is_zero(&v[3..9_999]));
        for i in [0, 1, 15, 16, 4095, 9_999] {
            v[i] = 1;
            assert!(!is_zero(&v), "{i}");
            v[i] = 0;
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn alignment() {
        assert_eq!(align_mib(0), 0);
        assert_eq!(align_mib(1), MIB);
        assert_eq!(align_mib(MIB), MIB);
        assert_eq!(align_mib(MIB + 1), 2 * MIB);
    }

    /// A disk that reads like its inner one but never lends its bytes.
    struct NoLend(MemImage);
    impl DiskImage for NoLend {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
            self.0.read_at(buf, offset)
        }
        fn extents(&self) -> Result<ExtentMap> {
            self.0.extents()
        }
        fn format(&self) -> crate::image::Format {
            crate::image::Format::Raw
        }
    }

    fn read_file(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// Random extents and data → VHD → the file is the input, zero padding, a valid footer;
        /// read back through the VHD reader equals the input; the manifest equals one computed
        /// from the plain bytes.
        #[test]
        fn vhd_round_trip(
            size in 0u64..(3 * MIB + 5000),
            writes in prop::collection::vec((0u64..(3 * MIB + 5000), 1usize..70_000, any::<u8>(), any::<bool>()), 0..8),
            raw in any::<bool>(),
            sparse in prop::sample::select(vec![512usize, 4096, 65536, 524288]),
            lend in any::<bool>(),
        ) {
            let mut data = vec![0u8; size as usize];
            let mut ranges = Vec::new();
            for &(off, len, byte, zero) in &writes {
                if off >= size { continue; }
                let end = (off + len as u64).min(size);
                let fill = if zero { 0 } else { byte };
                data[off as usize..end as usize].fill(fill);
                ranges.push((off, end - off, ExtentKind::Data));
            }
            // Bytes outside data extents must be zero: data ranges are applied last, so they win.
            let extents = ExtentMap::from_ranges(size, ranges);
            let mem = MemImage::with_extents(data.clone(), extents).unwrap();
            // Half the cases through a source that cannot lend its bytes, so the
            // read-into-a-buffer path (block devices, other formats) is tested too.
            let img: Box<dyn DiskImage> = if lend { Box::new(mem) } else { Box::new(NoLend(mem)) };
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out");
            let opts = ConvertOptions {
                format: if raw { OutputFormat::Raw } else { OutputFormat::Vhd },
                manifest: true,
                sync: false,
                unique_id: Some([3; 16]),
                timestamp: Some(5),
                sparse_size: sparse,
                ..ConvertOptions::default()
            };
            let report = convert(&*img, &out, &opts).unwrap();
            let bytes = read_file(&out);
            prop_assert_eq!(bytes.len() as u64, report.file_len);
            prop_assert_eq!(&bytes[..data.len()], &data[..]);
            let vsize = report.virtual_size as usize;
            prop_assert!(is_zero(&bytes[data.len()..vsize]));
            if raw {
                prop_assert_eq!(bytes.len(), data.len());
            } else {
                prop_assert_eq!(vsize as u64, align_mib(size));
                let vhd = FixedVhd::new(MemImage::new(bytes.clone())).unwrap();
                let mut back = vec![0u8; vsize];
                vhd.read_exact_at(&mut back, 0).unwrap();
                prop_assert_eq!(&back[..data.len()], &data[..]);
                prop_assert_eq!(vhd.footer().unique_id, [3; 16]);
            }
            let mut padded = data.clone();
            padded.resize(vsize, 0);
            let expect = Manifest::compute(&MemImage::new(padded)).unwrap();
            prop_assert_eq!(report.manifest.unwrap(), expect);
            let nonzero_pieces = data.chunks(sparse).filter(|p| !is_zero(p)).count() as u64;
            prop_assert!(report.bytes_written <= nonzero_pieces * sparse as u64);
        }
    }

    #[test]
    fn refuses_disks_over_32_tib_and_leaves_nothing() {
        struct Huge;
        impl DiskImage for Huge {
            fn len(&self) -> u64 {
                MAX_VHD_SIZE + 1
            }
            fn read_at(&self, _: &mut [u8], _: u64) -> Result<usize> {
                Ok(0)
            }
            fn extents(&self) -> Result<ExtentMap> {
                Ok(ExtentMap::from_ranges(self.len(), []))
            }
            fn format(&self) -> crate::image::Format {
                crate::image::Format::Raw
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("huge.vhd");
        let e = convert(&Huge, &out, &ConvertOptions::default()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Limit);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn failed_read_leaves_no_output() {
        struct Broken;
        impl DiskImage for Broken {
            fn len(&self) -> u64 {
                8 * MIB
            }
            fn read_at(&self, _: &mut [u8], offset: u64) -> Result<usize> {
                Err(Error::io("reading", std::io::Error::other("bad sector")).with_offset(offset))
            }
            fn extents(&self) -> Result<ExtentMap> {
                Ok(ExtentMap::all_data(self.len()))
            }
            fn format(&self) -> crate::image::Format {
                crate::image::Format::Raw
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.vhd");
        assert!(convert(&Broken, &out, &ConvertOptions::default()).is_err());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn cancelling_stops_and_leaves_no_output() {
        struct CancelAfterFirst(std::sync::atomic::AtomicBool);
        impl Progress for CancelAfterFirst {
            fn advance(&self, _: u64) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            fn cancelled(&self) -> bool {
                self.0.load(std::sync::atomic::Ordering::Relaxed)
            }
        }
        let img = MemImage::new(vec![1u8; (64 * MIB) as usize]);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c.vhd");
        let p = CancelAfterFirst(Default::default());
        let opts = ConvertOptions {
            progress: &p,
            ..ConvertOptions::default()
        };
        let e = convert(&img, &out, &opts).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Interrupted);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing left"
        );
    }

    #[test]
    fn in_place_appends_footer_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.raw");
        let data: Vec<u8> = (0..(MIB + 3) as u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let r = convert_in_place(&p, &ConvertOptions::default()).unwrap();
        assert_eq!(r.virtual_size, 2 * MIB);
        let bytes = read_file(&p);
        assert_eq!(bytes.len() as u64, 2 * MIB + 512);
        assert_eq!(&bytes[..data.len()], &data[..]);
        let vhd = FixedVhd::new(MemImage::new(bytes)).unwrap();
        assert_eq!(vhd.len(), 2 * MIB);
        let e = convert_in_place(&p, &ConvertOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("already ends with a VHD footer"),
            "{e}"
        );
        assert_eq!(read_file(&p).len() as u64, 2 * MIB + 512);
    }

    #[test]
    fn replacing_an_output_leaves_only_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.raw");
        let opts = ConvertOptions {
            format: OutputFormat::Raw,
            ..ConvertOptions::default()
        };
        convert(&MemImage::new(vec![1u8; 4096]), &out, &opts).unwrap();
        // A second name for the old file: it must keep its bytes (it is replaced, not changed).
        let other = dir.path().join("keep");
        std::fs::hard_link(&out, &other).unwrap();
        convert(&MemImage::new(vec![2u8; 8192]), &out, &opts).unwrap();
        wait_for_replaced_outputs();
        assert_eq!(read_file(&out), vec![2u8; 8192]);
        assert_eq!(read_file(&other), vec![1u8; 4096]);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["keep", "o.raw"], "no hidden file is left");
    }
}
