//! In-process fakes of the clouds, deterministic and with injectable faults, for unit and
//! property tests: [`ebs`] (the EBS direct APIs) and [`pageblob`] (Azure page blobs).

pub mod ebs;
pub mod pageblob;
