//! Who we are to the Blob service and where it is: an [`Account`] (endpoint, account name, a
//! SharedKey or a SAS token) parsed from a connection string, an account URL plus key, or a SAS
//! URL (all URLs through the `url` crate); and the credential chain a command line offers
//! ([`CredentialChain`]: `--sas`, `--connection-string`, `--account-url` with the key in an
//! environment variable, then the `AZURE_STORAGE_*` variables).
//!
//! Secrets never leave this module in text: `Debug` prints no key or token, and every message
//! that could hold a URL passes through [`redact`].

use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::BTreeMap;

/// Azurite's well-known development account.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, documented by Microsoft).
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's blob endpoint on its default port.
const DEV_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// How a request proves who it is.
#[derive(Clone)]
pub(super) enum Auth {
    /// SharedKey with the account's key (decoded).
    SharedKey(Vec<u8>),
    /// A SAS token: the query string, without the leading `?`.
    Sas(String),
}

/// Where to connect and how, parsed from the user's settings.
#[derive(Clone)]
pub struct Account {
    /// The account's blob endpoint without a trailing slash, e.g.
    /// `https://acct.blob.core.windows.net` or `http://127.0.0.1:10000/devstoreaccount1`.
    pub(super) endpoint: String,
    pub(super) account: String,
    pub(super) auth: Auth,
    /// A container named by a SAS URL.
    pub container: Option<String>,
    /// A blob named by a SAS URL.
    pub blob: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("endpoint", &self.endpoint)
            .field("account", &self.account)
            .field("container", &self.container)
            .field("blob", &self.blob)
            .finish_non_exhaustive()
    }
}

/// Removes secrets from `text`: the value of every `sig=` parameter, and each of `secrets`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.to_ascii_lowercase().find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        let after = &rest[i + 4..];
        let end = after
            .find(|c: char| c == '&' || c == '\'' || c == '"' || c.is_whitespace())
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        out = out.replace(s, "REDACTED");
    }
    out
}

/// Percent-decodes one URL path segment.
pub(super) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// An `http://` or `https://` URL with a host (the message never holds a SAS signature).
fn parse_url(url: &str) -> Result<url::Url> {
    let bad = || {
        Error::argument(format!(
            "{}: expected an http:// or https:// URL",
            redact(url, &[])
        ))
    };
    let u = url::Url::parse(url.trim()).map_err(|_| bad())?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(u)
}

/// Azurite and other emulators are addressed path-style (`http://127.0.0.1:10000/ACCOUNT/…`):
/// an IP address or `localhost`; Azure itself by host name (`https://ACCOUNT.blob.…/…`).
fn is_path_style(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The URL's path segments, decoded, empty ones left out.
fn segments(u: &url::Url) -> Vec<String> {
    u.path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).map(decode).collect())
        .unwrap_or_default()
}

/// `scheme://host[:port]` followed by `path` segments (as the URL spells them), no trailing '/'.
fn endpoint_of(u: &url::Url, path_segments: usize) -> String {
    let mut e = u.origin().ascii_serialization();
    if let Some(segs) = u.path_segments() {
        for s in segs.filter(|p| !p.is_empty()).take(path_segments) {
            e.push('/');
            e.push_str(s);
        }
    }
    e
}

impl Account {
    /// From an Azure Storage connection string (`AccountName=…;AccountKey=…;BlobEndpoint=…`,
    /// `DefaultEndpointsProtocol`, `EndpointSuffix`, `SharedAccessSignature`, or
    /// `UseDevelopmentStorage=true` for Azurite on its default port).
    ///
    /// # Errors
    /// A string that names no account, no credentials, or a bad key.
    pub fn from_connection_string(s: &str) -> Result<Self> {
        let mut kv: BTreeMap<String, String> = BTreeMap::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::argument("connection string: expected Key=Value pairs separated by ';'")
            })?;
            kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if kv
            .get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Account::shared_key(DEV_ENDPOINT, DEV_ACCOUNT, DEV_ACCOUNT_KEY);
        }
        let name = kv.get("accountname").cloned();
        let endpoint = match (kv.get("blobendpoint"), &name) {
            (Some(e), _) => e.clone(),
            (None, Some(n)) => format!(
                "{}://{n}.blob.{}",
                kv.get("defaultendpointsprotocol")
                    .map_or("https", String::as_str),
                kv.get("endpointsuffix")
                    .map_or("core.windows.net", String::as_str)
            ),
            (None, None) => {
                return Err(Error::argument(
                    "connection string: neither AccountName nor BlobEndpoint is given",
                ));
            }
        };
        if let Some(key) = kv.get("accountkey") {
            let name = name.ok_or_else(|| {
                Error::argument("connection string: AccountKey without AccountName")
            })?;
            return Account::shared_key(&endpoint, &name, key);
        }
        if let Some(sas) = kv.get("sharedaccesssignature") {
            let u = parse_url(&endpoint)?;
            let account = match name {
                Some(n) => n,
                None => Account::account_from_url(&endpoint).unwrap_or_default(),
            };
            return Ok(Account {
                account,
                endpoint: endpoint_of(&u, usize::MAX),
                auth: Auth::Sas(sas.trim_start_matches('?').to_string()),
                container: None,
                blob: None,
            });
        }
        Err(Error::argument(
            "connection string: no AccountKey and no SharedAccessSignature",
        ))
    }

    /// An account at `endpoint` (its blob service URL) with SharedKey credentials.
    ///
    /// # Errors
    /// A bad URL or a key that is not base64.
    pub fn shared_key(endpoint: &str, account: &str, key_base64: &str) -> Result<Self> {
        let key = B64
            .decode(key_base64.trim())
            .map_err(|_| Error::argument("the account key is not valid base64"))?;
        if key.is_empty() {
            return Err(Error::argument("the account key is empty"));
        }
        if account.is_empty() {
            return Err(Error::argument("the account name is empty"));
        }
        let u = parse_url(endpoint)?;
        if u.query().is_some() {
            return Err(Error::argument(
                "the account URL must not have a query string (use --sas for a SAS URL)",
            ));
        }
        Ok(Account {
            endpoint: endpoint_of(&u, usize::MAX),
            account: account.to_string(),
            auth: Auth::SharedKey(key),
            container: None,
            blob: None,
        })
    }

    /// The account name an account URL implies: the first label of
    /// `https://NAME.blob.core.windows.net`, or the first path segment of a path-style URL
    /// (`http://127.0.0.1:10000/NAME`, as Azurite serves).
    ///
    /// # Errors
    /// A URL that names no account.
    pub fn account_from_url(url: &str) -> Result<String> {
        let u = parse_url(url)?;
        let name = if is_path_style(&u) {
            segments(&u).into_iter().next().unwrap_or_default()
        } else {
            let host = u.host_str().unwrap_or("");
            host.split('.').next().unwrap_or("").to_string()
        };
        if name.is_empty() {
            return Err(Error::argument(format!(
                "{}: cannot tell the storage account from this URL",
                redact(url, &[])
            )));
        }
        Ok(name)
    }

    /// From a SAS URL of a container or a blob
    /// (`https://acct.blob.core.windows.net/container[/blob]?sv=…&sig=…`; path-style for
    /// 127.0.0.1 and localhost).
    ///
    /// # Errors
    /// A URL without a query string or without a container.
    pub fn from_sas_url(url: &str) -> Result<Self> {
        let u = parse_url(url)?;
        let query = u
            .query()
            .filter(|q| !q.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Error::argument("the SAS URL has no query string (no token)"))?;
        let mut segs = segments(&u).into_iter();
        let (endpoint, account) = if is_path_style(&u) {
            (endpoint_of(&u, 1), segs.next().unwrap_or_default())
        } else {
            let host = u.host_str().unwrap_or("");
            (
                endpoint_of(&u, 0),
                host.split('.').next().unwrap_or("").to_string(),
            )
        };
        let container = segs.next();
        // A blob name may hold '/': the rest of the path is the blob.
        let rest: Vec<String> = segs.collect();
        let blob = (!rest.is_empty()).then(|| rest.join("/"));
        if container.is_none() {
            return Err(Error::argument(
                "the SAS URL names no container: expected https://ACCOUNT.blob.core.windows.net/\
                 CONTAINER[/BLOB]?TOKEN",
            ));
        }
        Ok(Account {
            endpoint,
            account,
            auth: Auth::Sas(query),
            container,
            blob,
        })
    }

    /// The blob to use: the one the caller names, or the one the SAS URL names; both must agree.
    ///
    /// # Errors
    /// The two disagree, or neither names a container or a blob, or a name Azure refuses.
    pub fn blob_name(
        &self,
        container: Option<&str>,
        blob: Option<&str>,
    ) -> Result<super::super::pageblob::BlobName> {
        let pick = |given: Option<&str>, ours: &Option<String>, what: &str| match (given, ours) {
            (Some(a), Some(b)) if a != b => Err(Error::argument(format!(
                "--{what} {a} differs from the SAS URL's {what} {b}"
            ))),
            (Some(a), _) => Ok(a.to_string()),
            (None, Some(b)) => Ok(b.clone()),
            (None, None) => Err(Error::argument(format!("--{what} is required"))),
        };
        let c = pick(container, &self.container, "container")?;
        let b = pick(blob, &self.blob, "blob")?;
        super::client::check_container_name(&c)?;
        super::client::check_blob_name(&b)?;
        Ok(super::super::pageblob::BlobName::new(c, b))
    }

    /// `true` when this account uses the public development key (Azurite's), which is no
    /// secret.
    pub fn is_dev_store(&self) -> bool {
        matches!(&self.auth, Auth::SharedKey(k) if B64.decode(DEV_ACCOUNT_KEY).is_ok_and(|d| d == *k))
    }
}

/// Where a command line says to connect, tried in this order: a SAS URL, a connection string,
/// an account URL with the key in the environment variable `account_key_env`; without any of
/// them, the environment's `AZURE_STORAGE_SAS_URL`, `AZURE_STORAGE_CONNECTION_STRING`, then
/// `AZURE_STORAGE_ACCOUNT_URL` (with the key variable; the account name from
/// `AZURE_STORAGE_ACCOUNT` or the URL).
#[derive(Clone)]
pub struct CredentialChain {
    /// `--sas`: a SAS URL of the container or the blob.
    pub sas_url: Option<String>,
    /// `--connection-string`.
    pub connection_string: Option<String>,
    /// `--account-url`: the account's blob service URL.
    pub account_url: Option<String>,
    /// The environment variable holding the account key for an account URL.
    pub account_key_env: String,
}

impl Default for CredentialChain {
    fn default() -> Self {
        CredentialChain {
            sas_url: None,
            connection_string: None,
            account_url: None,
            account_key_env: "AZURE_STORAGE_KEY".into(),
        }
    }
}

impl std::fmt::Debug for CredentialChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = |o: &Option<String>| if o.is_some() { "given" } else { "-" };
        f.debug_struct("CredentialChain")
            .field("sas_url", &given(&self.sas_url))
            .field("connection_string", &given(&self.connection_string))
            .field(
                "account_url",
                &self.account_url.as_deref().map(|u| redact(u, &[])),
            )
            .field("account_key_env", &self.account_key_env)
            .finish()
    }
}

/// What the chain found.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The account.
    pub account: Account,
    /// Where it came from (`--sas`, `$AZURE_STORAGE_CONNECTION_STRING`, ...).
    pub from: String,
    /// Things the user should hear (an account key on the command line), without secrets.
    pub warnings: Vec<String>,
}

impl CredentialChain {
    /// Resolves the chain against the process environment.
    ///
    /// # Errors
    /// Nothing given, or what is given does not parse (the message names where it came from).
    pub fn resolve(&self) -> Result<Resolved> {
        self.resolve_with(&|name| std::env::var(name).ok())
    }

    /// Resolves the chain with `env` as the environment (empty values count as unset).
    ///
    /// # Errors
    /// As [`CredentialChain::resolve`].
    pub fn resolve_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved> {
        let env = |n: &str| env(n).filter(|v| !v.is_empty());
        let from = |what: &str| {
            let what = what.to_string();
            move |e: Error| Error::new(e.kind(), format!("{what}: {}", e.message()))
        };
        let with_key = |url: &str, what: &str| -> Result<Account> {
            let key = env(&self.account_key_env).ok_or_else(|| {
                Error::argument(format!(
                    "{what} needs the account key in ${} (see --account-key-env)",
                    self.account_key_env
                ))
            })?;
            let name = match env("AZURE_STORAGE_ACCOUNT") {
                Some(n) => n,
                None => Account::account_from_url(url)?,
            };
            Account::shared_key(url, &name, &key)
        };
        let mut warnings = Vec::new();
        let (account, source) = if let Some(s) = &self.sas_url {
            (Account::from_sas_url(s).map_err(from("--sas"))?, "--sas")
        } else if let Some(c) = &self.connection_string {
            let a = Account::from_connection_string(c).map_err(from("--connection-string"))?;
            if matches!(a.auth, Auth::SharedKey(_)) && !a.is_dev_store() {
                // Not the public development key: other users can read argv (`ps`).
                warnings.push(
                    "an account key on the command line can be read by other users of this \
                     machine; prefer $AZURE_STORAGE_CONNECTION_STRING"
                        .to_string(),
                );
            }
            (a, "--connection-string")
        } else if let Some(u) = &self.account_url {
            (with_key(u, "--account-url")?, "--account-url")
        } else if let Some(s) = env("AZURE_STORAGE_SAS_URL") {
            (
                Account::from_sas_url(&s).map_err(from("$AZURE_STORAGE_SAS_URL"))?,
                "$AZURE_STORAGE_SAS_URL",
            )
        } else if let Some(c) = env("AZURE_STORAGE_CONNECTION_STRING") {
            (
                Account::from_connection_string(&c)
                    .map_err(from("$AZURE_STORAGE_CONNECTION_STRING"))?,
                "$AZURE_STORAGE_CONNECTION_STRING",
            )
        } else if let Some(u) = env("AZURE_STORAGE_ACCOUNT_URL") {
            (
                with_key(&u, "$AZURE_STORAGE_ACCOUNT_URL")?,
                "$AZURE_STORAGE_ACCOUNT_URL",
            )
        } else {
            return Err(Error::argument(format!(
                "no Azure storage account given: use --sas, --connection-string or --account-url \
                 (key in ${}), or set AZURE_STORAGE_SAS_URL, AZURE_STORAGE_CONNECTION_STRING or \
                 AZURE_STORAGE_ACCOUNT_URL",
                self.account_key_env
            )));
        };
        Ok(Resolved {
            account,
            from: source.to_string(),
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_parse() {
        let a = Account::from_connection_string(&format!(
            "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};\
             BlobEndpoint=http://127.0.0.1:10000/{DEV_ACCOUNT};"
        ))
        .unwrap();
        assert_eq!(a.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(a.account, DEV_ACCOUNT);
        let a = Account::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(a.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert!(a.is_dev_store());
        let a = Account::from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AAAA;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(a.endpoint, "https://acct.blob.core.windows.net");
        assert!(!a.is_dev_store());
        let a = Account::from_connection_string(
            "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=SECRETSIG",
        )
        .unwrap();
        assert!(matches!(a.auth, Auth::Sas(_)));
        assert_eq!(a.endpoint, "https://acct.blob.core.windows.net");
        assert_eq!(a.account, "acct");
        for bad in [
            "AccountName=a",
            "garbage",
            "AccountName=a;AccountKey=!!!",
            "AccountKey=AAAA",
            "BlobEndpoint=not a url;SharedAccessSignature=sig=1",
        ] {
            assert!(Account::from_connection_string(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sas_urls_name_container_and_blob() {
        let a = Account::from_sas_url(
            "https://acct.blob.core.windows.net/disks/os%20disk.vhd?sv=2025-01-05&sig=abc%2Bdef",
        )
        .unwrap();
        assert_eq!(a.endpoint, "https://acct.blob.core.windows.net");
        assert_eq!(a.account, "acct");
        assert_eq!(a.container.as_deref(), Some("disks"));
        assert_eq!(a.blob.as_deref(), Some("os disk.vhd"));
        let a = Account::from_sas_url("http://127.0.0.1:10000/devstoreaccount1/c1?sig=x").unwrap();
        assert_eq!(a.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(
            (a.container.as_deref(), a.blob.as_deref()),
            (Some("c1"), None)
        );
        let a = Account::from_sas_url("http://localhost:10000/dev/c/a/b.vhd?sig=x").unwrap();
        assert_eq!(a.endpoint, "http://localhost:10000/dev");
        assert_eq!(a.blob.as_deref(), Some("a/b.vhd"));
        assert!(Account::from_sas_url("https://acct.blob.core.windows.net/c").is_err());
        assert!(Account::from_sas_url("ftp://x/c?sig=1").is_err());
        let e = Account::from_sas_url("https://acct.blob.core.windows.net/?sig=TOPSECRET")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
        let e = Account::from_sas_url("https://[::1/c?sig=TOPSECRET")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("TOPSECRET"), "{e}");
        assert_eq!(
            Account::account_from_url("https://acct.blob.core.windows.net/").unwrap(),
            "acct"
        );
        assert_eq!(
            Account::account_from_url("http://127.0.0.1:10000/devstoreaccount1").unwrap(),
            "devstoreaccount1"
        );
        assert!(Account::account_from_url("http://127.0.0.1:10000/").is_err());
    }

    #[test]
    fn blob_names_come_from_the_caller_or_the_sas_url_and_must_agree() {
        let a = Account::from_sas_url("http://127.0.0.1:1/dev/disks/d.vhd?sig=x").unwrap();
        assert_eq!(a.blob_name(None, None).unwrap().to_string(), "disks/d.vhd");
        assert!(a.blob_name(Some("other"), None).is_err());
        assert!(a.blob_name(Some("disks"), Some("d.vhd")).is_ok());
        let k = Account::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert!(k.blob_name(None, Some("b")).is_err(), "no container");
        assert!(k.blob_name(Some("Bad_Name"), Some("b")).is_err());
    }

    #[test]
    fn the_chain_tries_flags_then_the_environment_and_prints_no_secret() {
        let envs = |vars: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                vars.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = CredentialChain::default();
        let e = none.resolve_with(&envs(&[])).unwrap_err();
        assert!(e.to_string().contains("no Azure storage account"), "{e}");
        let r = none
            .resolve_with(&envs(&[
                ("AZURE_STORAGE_SAS_URL", ""),
                (
                    "AZURE_STORAGE_CONNECTION_STRING",
                    "UseDevelopmentStorage=true",
                ),
                ("AZURE_STORAGE_ACCOUNT_URL", "http://127.0.0.1:1/x"),
            ]))
            .unwrap();
        assert_eq!(r.from, "$AZURE_STORAGE_CONNECTION_STRING");
        assert!(r.warnings.is_empty());
        let r = none
            .resolve_with(&envs(&[
                (
                    "AZURE_STORAGE_ACCOUNT_URL",
                    "https://acct.blob.core.windows.net",
                ),
                ("AZURE_STORAGE_KEY", "S0VZU0VDUkVUS0VZ"),
            ]))
            .unwrap();
        assert_eq!(
            (r.from.as_str(), r.account.account.as_str()),
            ("$AZURE_STORAGE_ACCOUNT_URL", "acct")
        );
        let e = none
            .resolve_with(&envs(&[(
                "AZURE_STORAGE_ACCOUNT_URL",
                "https://a.blob.core.windows.net",
            )]))
            .unwrap_err();
        assert!(e.to_string().contains("$AZURE_STORAGE_KEY"), "{e}");
        let flags = CredentialChain {
            sas_url: Some("https://acct.blob.core.windows.net/c/b?sv=1&sig=SECRETSIG".into()),
            connection_string: Some("AccountName=a;AccountKey=S0VZU0VDUkVUS0VZ".into()),
            ..CredentialChain::default()
        };
        let r = flags.resolve_with(&envs(&[])).unwrap();
        assert_eq!(r.from, "--sas");
        let dbg = format!("{flags:?} {r:?}");
        assert!(
            !dbg.contains("SECRETSIG") && !dbg.contains("S0VZU0VDUkVUS0VZ"),
            "{dbg}"
        );
        let cs = CredentialChain {
            connection_string: Some("AccountName=a;AccountKey=S0VZU0VDUkVUS0VZ".into()),
            ..CredentialChain::default()
        };
        let r = cs.resolve_with(&envs(&[])).unwrap();
        assert_eq!(
            r.warnings.len(),
            1,
            "a real key on the command line is warned about"
        );
        let bad = CredentialChain {
            connection_string: Some("AccountName=a;AccountKey=!!!SECRET!!!".into()),
            ..CredentialChain::default()
        };
        let e = bad.resolve_with(&envs(&[])).unwrap_err().to_string();
        assert!(
            e.starts_with("--connection-string: ") && !e.contains("SECRET"),
            "{e}"
        );
    }
}
