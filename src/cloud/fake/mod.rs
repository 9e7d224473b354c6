//! In-process fakes of the clouds, deterministic and with injectable faults, for unit and
//! property tests: [`ebs`] (the EBS direct APIs), [`ec2`] (EC2, with the EBS direct APIs over its snapshots) and
//! [`pageblob`] (Azure page blobs).

pub mod ebs;
pub mod ec2;
pub mod pageblob;
