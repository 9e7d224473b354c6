//! The clouds this tool talks to, each behind a narrow trait with an in-process fake that can be
//! told to misbehave, and a real HTTP client tested against an emulator on 127.0.0.1.
//!
//! - [`ebs`]: EBS direct APIs (snapshot blocks): the trait, a snapshot read as a `DiskImage`.
//! - [`aws_ebs`]: the real service over HTTP (aws-sdk-ebs), also for emulators such as moto.
//! - [`ec2`]: the EC2 calls a migration needs (instances, volumes, images, security groups,
//!   snapshots, stop): the trait, its types, the instance-type table.
//! - [`aws_ec2`]: the real EC2 over HTTP (aws-sdk-ec2), also for moto.
//! - [`pageblob`]: Azure page blobs: the store trait, names, answers and errors.
//! - [`range_set`]: ordered, merged byte ranges ("which pages hold data").
//! - [`azure`]: the Blob REST API (credentials, SharedKey signing, the client, XML answers),
//!   also for Azurite.
//! - [`fake`]: the in-process fakes of EBS and page blobs.
//! - [`retry`]: bounded retries with backoff, shared by the clients above.
//!
//! Every failure of a call reaches the caller as an [`Error`](crate::Error) whose kind follows
//! the service's answer (not found, conflict, denied, cloud) with the status, the service's error
//! code and whether it is transient kept as data ([`Error::cloud`](crate::Error::cloud)).
//! Uploads and downloads over these stores are in [`transfer`](crate::transfer).

pub mod aws_ebs;
pub mod aws_ec2;
pub(crate) mod aws_sdk;
pub mod azure;
#[cfg(test)]
pub(crate) mod canned;
pub mod ebs;
pub mod ec2;
pub mod fake;
pub mod pageblob;
pub mod range_set;
pub mod retry;

/// The Blob REST API client under its former name.
pub use azure as azure_blob;
