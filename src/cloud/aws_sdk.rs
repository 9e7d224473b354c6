//! The AWS SDK setup every AWS client here shares ([`AwsEbs`](super::aws_ebs::AwsEbs),
//! [`AwsEc2`](super::aws_ec2::AwsEc2)): region, credentials and endpoint from the usual AWS
//! settings (environment — `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, … — and
//! profiles) unless given; the SDK's own retries off, since
//! [`RetryPolicy`](super::retry::RetryPolicy) decides; a timeout per call attempt; a small tokio
//! runtime that drives the SDK under synchronous callers.

use crate::error::{Error, Result};
use std::time::Duration;

/// A runtime and the loaded SDK configuration, to build any service's client from.
pub(crate) struct AwsSetup {
    /// Drives the SDK's futures (`block_on`).
    pub(crate) rt: tokio::runtime::Runtime,
    /// Region, endpoint, credentials, timeouts.
    pub(crate) config: aws_config::SdkConfig,
}

/// Loads the configuration for `region` (or the configured default) at `endpoint` (or AWS's),
/// `timeout` per call attempt, and `credentials` instead of the usual settings when given.
///
/// # Errors
/// The async runtime cannot start.
pub(crate) fn setup(
    endpoint: Option<&str>,
    region: Option<&str>,
    timeout: Duration,
    credentials: Option<aws_sdk_ebs::config::Credentials>,
) -> Result<AwsSetup> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let config = rt.block_on(async {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_string()));
        }
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(c);
        }
        loader
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(timeout)
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await
    });
    Ok(AwsSetup { rt, config })
}
