//! The crate's one error type: a kind (what went wrong, which decides the exit code), a message
//! (what was expected and what was found), context (the file, the offset, the operation) and the
//! underlying cause, if any.
//!
//! Every fallible function in the library returns [`Result`]. Parsers build errors with
//! [`Error::invalid`] and attach the file with [`ResultExt::path`]; I/O errors are wrapped with
//! [`Error::io`] so the operation and the offset are never lost.

use std::fmt;
use std::path::{Path, PathBuf};

/// A `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure this is: what a caller decides on (retry, report, exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing a file failed.
    Io,
    /// The input is not a valid image of the format it claims to be (bad magic, checksum field,
    /// size): corrupt or not what it says.
    InvalidFormat,
    /// Data did not match the checksum or digest that vouches for it (an EBS block's SHA-256, a
    /// recovery point's marker digest, a blob's MD5).
    Checksum,
    /// The input is valid but uses something this tool does not support (yet).
    Unsupported,
    /// A size or offset is outside what the target format or cloud accepts.
    Limit,
    /// The caller asked for something that cannot be done (bad option, wrong file type).
    InvalidArgument,
    /// What was asked for does not exist (a file, a blob, a snapshot, a point).
    NotFound,
    /// The state does not allow it: it exists already, was changed meanwhile, or a precondition
    /// failed (HTTP 409 and 412).
    Conflict,
    /// The credentials were refused, or do not allow this (HTTP 401 and 403).
    Denied,
    /// A cloud service failed in another way (throttling, 5xx, timeouts, dropped connections,
    /// answers that are not the service's); [`Error::cloud`] has the status and code.
    Cloud,
    /// The object's state does not allow the operation (Site Recovery's `allowedOperations`):
    /// a "no" rather than a failure.
    NotAllowed,
    /// The operation was stopped on request (see `Progress::cancelled`) or by a signal.
    Interrupted,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Io => "I/O error",
            ErrorKind::InvalidFormat => "invalid image",
            ErrorKind::Checksum => "checksum mismatch",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Limit => "size limit",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Denied => "access denied",
            ErrorKind::NotAllowed => "not allowed",
            ErrorKind::Cloud => "cloud service error",
            ErrorKind::Interrupted => "interrupted",
        })
    }
}

/// What a cloud service answered, kept as data so a caller can tell a 403 from a 404 and decide
/// what to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudError {
    /// The service ("blob", "ebs", ...).
    pub service: &'static str,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The service's error code (`ServerBusy`, `ResourceNotFoundException`, ...), when given.
    pub code: Option<String>,
    /// `true` when the same call may succeed later (throttling, 5xx, timeouts).
    pub transient: bool,
}

impl CloudError {
    /// The kind an answer with this status is: 404 not found, 409/412 conflict, 401/403
    /// denied, 400 invalid argument, anything else (or no answer) a cloud error. EC2 answers 400
    /// for a missing resource and for a wrong state, so its codes decide first: `*.NotFound`
    /// is not found, `IncorrectState` / `IncorrectInstanceState` a conflict,
    /// `UnauthorizedOperation` / `AuthFailure` denied.
    pub fn kind(&self) -> ErrorKind {
        match self.code.as_deref() {
            Some(c) if c.ends_with(".NotFound") => return ErrorKind::NotFound,
            Some("IncorrectState" | "IncorrectInstanceState") => return ErrorKind::Conflict,
            Some("UnauthorizedOperation" | "AuthFailure") => return ErrorKind::Denied,
            _ => {}
        }
        match self.status {
            Some(404) => ErrorKind::NotFound,
            Some(409 | 412) => ErrorKind::Conflict,
            Some(401 | 403) => ErrorKind::Denied,
            Some(400) => ErrorKind::InvalidArgument,
            _ => ErrorKind::Cloud,
        }
    }
}

/// The crate's error: kind, message, context and cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    path: Option<PathBuf>,
    offset: Option<u64>,
    cloud: Option<Box<CloudError>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            path: None,
            offset: None,
            cloud: None,
            source: None,
        }
    }

    /// The input is not a valid image: `message` should name the expected and the found value.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidFormat, message)
    }

    /// The input uses a feature this tool does not support.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// A size is outside what the target accepts.
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Limit, message)
    }

    /// The caller asked for something that cannot be done.
    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// The operation was stopped on request.
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Interrupted, "interrupted: stopped on request")
    }

    /// Data did not match the checksum or digest that vouches for it.
    pub fn checksum(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Checksum, message)
    }

    /// What was asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// An [`ErrorKind::NotAllowed`] error: the state does not allow the operation.
    pub fn not_allowed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotAllowed, message)
    }

    /// An [`ErrorKind::Denied`] error: the credentials or key were refused.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Denied, message)
    }

    /// The state does not allow it (exists already, changed meanwhile, precondition failed).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// A cloud service's failure: the kind follows the answer's status ([`CloudError::kind`]),
    /// the answer is kept as data ([`Error::cloud`]) and the client's error as the source.
    pub fn from_cloud(
        message: impl Into<String>,
        cloud: CloudError,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let mut e = Self::new(cloud.kind(), message);
        e.cloud = Some(Box::new(cloud));
        e.source = Some(Box::new(source));
        e
    }

    /// Attach a cause (kept as [`std::error::Error::source`], not flattened into the message).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What the cloud service answered, when this is a cloud failure.
    pub fn cloud(&self) -> Option<&CloudError> {
        self.cloud.as_deref()
    }

    /// `true` when trying the same thing again later may succeed (a transient cloud failure).
    pub fn is_transient(&self) -> bool {
        self.cloud.as_ref().is_some_and(|c| c.transient)
    }

    /// An I/O error during `operation` (e.g. "reading", "writing footer").
    pub fn io(operation: impl Into<String>, source: std::io::Error) -> Self {
        let mut e = Self::new(ErrorKind::Io, operation);
        e.source = Some(Box::new(source));
        e
    }

    /// Attach the file this error concerns (kept if one is already set: the innermost wins).
    pub fn with_path(mut self, path: impl AsRef<Path>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Attach the byte offset this error concerns (the innermost wins).
    pub fn with_offset(mut self, offset: u64) -> Self {
        if self.offset.is_none() {
            self.offset = Some(offset);
        }
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file this error concerns, if known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset this error concerns, if known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The message without context.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        if let Some(o) = self.offset {
            write!(f, "at offset {o} (0x{o:x}): ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Adds context to a `Result` of the crate's error.
pub trait ResultExt<T> {
    /// Attach the file the error concerns.
    fn path(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| e.with_path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_path_offset_message_and_source() {
        let e = Error::io("reading", std::io::Error::other("disk on fire"))
            .with_offset(4096)
            .with_path("/x/disk.raw");
        assert_eq!(
            e.to_string(),
            "/x/disk.raw: at offset 4096 (0x1000): reading"
        );
        let src = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(src.as_deref(), Some("disk on fire"));
        assert_eq!(e.kind(), ErrorKind::Io);
    }

    #[test]
    fn innermost_context_wins() {
        let e = Error::invalid("bad")
            .with_path("inner")
            .with_path("outer")
            .with_offset(1)
            .with_offset(2);
        assert_eq!(e.path(), Some(Path::new("inner")));
        assert_eq!(e.offset(), Some(1));
    }

    #[test]
    fn cloud_answers_become_kinds_and_keep_their_details() {
        for (status, kind) in [
            (Some(403), ErrorKind::Denied),
            (Some(401), ErrorKind::Denied),
            (Some(404), ErrorKind::NotFound),
            (Some(409), ErrorKind::Conflict),
            (Some(412), ErrorKind::Conflict),
            (Some(400), ErrorKind::InvalidArgument),
            (Some(429), ErrorKind::Cloud),
            (Some(500), ErrorKind::Cloud),
            (None, ErrorKind::Cloud),
        ] {
            let c = CloudError {
                service: "blob",
                status,
                code: Some("X".into()),
                transient: status.is_none_or(|s| s >= 429),
            };
            let e = Error::from_cloud("put page", c.clone(), std::io::Error::other("inner"));
            assert_eq!(e.kind(), kind, "{status:?}");
            assert_eq!(e.cloud(), Some(&c));
            assert_eq!(e.is_transient(), c.transient);
            let src = std::error::Error::source(&e).map(|s| s.to_string());
            assert_eq!(src.as_deref(), Some("inner"));
            assert_eq!(e.to_string(), "put page", "the cause is not flattened in");
        }
        // EC2's codes at HTTP 400 decide the kind.
        for (code, kind) in [
            ("InvalidInstanceID.NotFound", ErrorKind::NotFound),
            ("InvalidVolume.NotFound", ErrorKind::NotFound),
            ("IncorrectInstanceState", ErrorKind::Conflict),
            ("AuthFailure", ErrorKind::Denied),
            ("InvalidParameterValue", ErrorKind::InvalidArgument),
        ] {
            let c = CloudError {
                service: "ec2",
                status: Some(400),
                code: Some(code.into()),
                transient: false,
            };
            assert_eq!(c.kind(), kind, "{code}");
        }
    }
}
