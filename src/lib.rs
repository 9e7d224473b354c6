//! # ec2azure
//!
//! Offline, on one workstation, what Azure Site Recovery does when it migrates AWS EC2 machines to
//! Azure. EC2 volume snapshots (raw images, as `dd`, coldsnap or a snapshot export leave them,
//! EBS snapshots, VHD, VHDX, qcow2) become fixed VHDs that Azure accepts as page blobs and managed
//! disks — always a whole MiB, always with a correct footer; replicated change journals applied
//! to a base give recovery points, each provable against the digest its marker recorded; and
//! disk images can be inspected, checked against Azure's rules, and compared.
//!
//! - [`image`]: the [`DiskImage`] abstraction (size, positional reads, extent map) and [`open`].
//! - [`export`]: the fixed VHD (or raw) writer, [`convert`] and [`convert_in_place`].
//! - [`digest`]: the per-512-KiB-block SHA-256 manifest and its root digest.
//! - [`check`]: Azure readiness rules; [`compare`](mod@compare): content comparison.
//! - [`journal`]: change journals (the replicated write stream of a disk), format and reader.
//! - [`recovery`]: recovery points — policy, catalog, a point as a [`DiskImage`], one-pass
//!   verification of every point, the replica a process server keeps.
//!
//! ```no_run
//! use ec2azure::{open, convert, ConvertOptions};
//! use std::path::Path;
//!
//! let snapshot = open(Path::new("snap.raw"), None)?;
//! let report = convert(&*snapshot, Path::new("disk.vhd"), &ConvertOptions {
//!     manifest: true,
//!     ..ConvertOptions::default()
//! })?;
//! println!("{} bytes written, root digest {}", report.bytes_written, report.manifest.unwrap().root);
//! # Ok::<(), ec2azure::Error>(())
//! ```

pub mod check;
pub mod clock;
pub mod cloud;
pub mod compare;
pub mod digest;
pub mod error;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod journal;
pub mod progress;
pub mod recovery;
pub mod sample;

pub use check::{CheckReport, Target, check_file};
pub use compare::{Comparison, compare};
pub use digest::{Manifest, ManifestBuilder};
pub use error::{CloudError, Error, ErrorKind, Result};
pub use export::{ConvertOptions, ConvertReport, OutputFormat, convert, convert_in_place};
pub use image::{DiskImage, ExtentKind, ExtentMap, Format, OpenOptions, open, open_with};
pub use progress::{NoProgress, Progress};
