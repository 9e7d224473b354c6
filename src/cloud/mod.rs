//! The clouds this tool talks to, each behind a narrow trait with an in-process fake that can be
//! told to misbehave (and, next, a real HTTP client tested against an emulator on 127.0.0.1).
//!
//! - [`ebs`]: EBS direct APIs (snapshot blocks), read as a `DiskImage`; the in-process fake.
//! - [`aws_ebs`]: the real service over HTTP (aws-sdk-ebs), also for emulators such as moto.

pub mod aws_ebs;
pub mod ebs;
