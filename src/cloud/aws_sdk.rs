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

/// What an SDK call's failure was, whichever service made it: the shape both services' errors
/// ([`EbsError`](super::ebs::EbsError), [`Ec2Error`](super::ec2::Ec2Error)) are made from.
pub(crate) enum SdkFailure {
    /// No answer in time.
    Timeout,
    /// The request could not be sent.
    Connection(String),
    /// The service answered with an error (or with a body that is not its answer: no code).
    Service {
        /// HTTP status.
        status: u16,
        /// The AWS error code.
        code: Option<String>,
        /// The service's message.
        message: String,
    },
    /// Anything else.
    Fatal(String),
}

/// Classifies an SDK error, keeping the HTTP status and the AWS error code; `service` names
/// the service in the message of an answer that is not its own ("EBS", "EC2").
pub(crate) fn classify<E>(
    e: aws_sdk_ebs::error::SdkError<E, aws_sdk_ebs::config::http::HttpResponse>,
    service: &str,
) -> SdkFailure
where
    E: aws_sdk_ebs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_ebs::error::SdkError;
    let cause = || {
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    match &e {
        SdkError::TimeoutError(_) => SdkFailure::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => SdkFailure::Timeout,
        SdkError::DispatchFailure(_) => {
            SdkFailure::Connection(format!("the request could not be sent: {}", cause()))
        }
        SdkError::ResponseError(r) => SdkFailure::Service {
            status: r.raw().status().as_u16(),
            code: None,
            message: format!("a body that is not an {service} answer"),
        },
        SdkError::ServiceError(se) => SdkFailure::Service {
            status: se.raw().status().as_u16(),
            code: se.err().code().map(str::to_string),
            message: se.err().message().unwrap_or("").to_string(),
        },
        _ => SdkFailure::Fatal(format!("{e}: {}", cause())),
    }
}
