//! The clouds this tool talks to, each behind a narrow trait with an in-process fake that can be
//! told to misbehave, and a real HTTP client tested against an emulator on 127.0.0.1.
//!
//! - [`ebs`]: EBS direct APIs (snapshot blocks), read as a `DiskImage`; the in-process fake.
//! - [`aws_ebs`]: the real service over HTTP (aws-sdk-ebs), also for emulators such as moto.
//! - [`pageblob`]: Azure page blobs: the store trait and its in-process fake.
//! - [`azure_blob`]: the Blob REST API client (SharedKey or SAS), also for Azurite.
//! - [`retry`]: bounded retries with backoff, shared by the clients above.
//! - [`upload`]: any disk to a page blob (converted on the fly), resumable and verified; and
//!   a page blob back to a sparse file.

pub mod aws_ebs;
pub mod azure_blob;
#[cfg(test)]
pub(crate) mod canned;
pub mod ebs;
pub mod pageblob;
pub mod retry;
