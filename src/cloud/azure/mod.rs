//! Azure Blob storage over its REST API, for page blobs, split by job:
//!
//! - [`credentials`]: who we are and where the service is ([`Account`]: connection strings,
//!   account URL + key, SAS URLs) and the command line's credential chain
//!   ([`CredentialChain`]); secrets are never printed ([`redact`]).
//! - [`signing`]: SharedKey authorization (the canonical string and its HMAC).
//! - [`client`]: [`AzureBlobClient`], the HTTP client implementing
//!   [`PageBlobStore`](super::pageblob::PageBlobStore), tested against Azurite.
//! - [`xml`]: the service's XML answers (page lists, error bodies), through roxmltree.

pub mod client;
pub mod credentials;
pub(crate) mod signing;
pub mod xml;

pub use client::{API_VERSION, AzureBlobClient, Timeouts, check_blob_name, check_container_name};
pub use credentials::{Account, CredentialChain, DEV_ACCOUNT, DEV_ACCOUNT_KEY, Resolved, redact};
pub use xml::{PageList, parse_error_body, parse_page_list};
