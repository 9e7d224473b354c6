//! In-process fakes of the clouds, deterministic and with injectable faults, for unit and
//! property tests: [`ebs`] (the EBS direct APIs), [`ec2`] (EC2, with the EBS direct APIs over its
//! snapshots) and [`pageblob`] (Azure page blobs); and [`file_pageblob`], page blobs kept in
//! files (a site's storage accounts).

pub mod ebs;
pub mod ec2;
pub mod file_pageblob;
pub mod pageblob;
