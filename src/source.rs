//! Opening any source as a [`DiskImage`]: a path (every file format of [`crate::image`]) or a
//! URI naming a cloud object — `ebs://snap-…`, an EBS snapshot read through the EBS direct APIs
//! (region, credentials and endpoint, `AWS_ENDPOINT_URL`, from the usual AWS settings). It sits
//! above both `image` and `cloud`, so the image formats never import a cloud client.

use crate::cloud::{aws_ebs::AwsEbs, ebs::EbsSnapshot, ebs::RetryPolicy};
use crate::error::{Error, Result};
use crate::image::{self, DiskImage, Format, OpenOptions};
use std::path::Path;

/// What a source string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef<'a> {
    /// A local file or block device.
    File(&'a Path),
    /// An EBS snapshot id (`snap-…`).
    Ebs(&'a str),
}

/// Says what `path` names.
///
/// # Errors
/// A URI of a known scheme that is malformed (`ebs://` without a `snap-` id).
pub fn parse(path: &Path) -> Result<SourceRef<'_>> {
    match path.to_str().and_then(|s| s.strip_prefix("ebs://")) {
        Some(id) if id.starts_with("snap-") && !id.contains('/') && id.len() > 5 => {
            Ok(SourceRef::Ebs(id))
        }
        Some(_) => Err(Error::argument(format!(
            "{}: expected ebs://snap-<id>",
            path.display()
        ))),
        None => Ok(SourceRef::File(path)),
    }
}

/// Opens `path` — a file, or `ebs://snap-…` — read-only, detecting a file's format unless
/// `format` names it.
///
/// # Errors
/// As [`image::open`], and the errors of the EBS client.
pub fn open(path: &Path, format: Option<Format>) -> Result<Box<dyn DiskImage>> {
    open_with(path, &OpenOptions { format, disk: None })
}

/// [`open`] with every option.
///
/// # Errors
/// As [`open`].
pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>> {
    match parse(path)? {
        SourceRef::File(p) => image::open_with(p, opts),
        SourceRef::Ebs(id) => {
            if opts.format.is_some_and(|f| f != Format::Raw) || opts.disk.is_some() {
                return Err(Error::argument(format!(
                    "{}: an EBS snapshot is a raw disk; -f and --disk do not apply",
                    path.display()
                )));
            }
            let api = AwsEbs::new(None, None)?;
            Ok(Box::new(EbsSnapshot::open(
                api,
                id,
                RetryPolicy::default(),
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_paths() {
        assert_eq!(
            parse(Path::new("ebs://snap-0123")).unwrap(),
            SourceRef::Ebs("snap-0123")
        );
        assert_eq!(
            parse(Path::new("disk.raw")).unwrap(),
            SourceRef::File(Path::new("disk.raw"))
        );
        for bad in ["ebs://vol-1", "ebs://snap-1/x", "ebs://snap-"] {
            assert!(parse(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
