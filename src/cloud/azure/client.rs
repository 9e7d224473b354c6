//! The Blob REST API client for page blobs, over HTTP(S): a small client of our own (ureq, no
//! async stack) implementing [`PageBlobStore`], tested against Azurite and against canned
//! answers. The API version is pinned ([`API_VERSION`]); every call has timeouts.
//!
//! Every answer that is not a success becomes a [`BlobError::Status`] with the HTTP status and
//! Azure's error code (the `x-ms-error-code` header, else the XML body's `Code`). Every error
//! message passes through [`redact`] (which removes `sig=` values and the key itself) before it
//! is returned. The client refuses, before sending, any `Put Page` that is not 512-aligned or is
//! larger than 4 MiB (Azurite would accept it; Azure would not), and logs every request it sends
//! when asked, so tests can check that.

use super::credentials::{Account, Auth, decode, redact};
use super::xml::{parse_error_body, parse_page_list};
use crate::cloud::pageblob::{
    BlobError, BlobName, BlobProperties, MAX_PUT, Op, PAGE, PageBlobStore, Request,
};
use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

/// The Blob service API version every request asks for (one Azurite 3.35 knows).
pub const API_VERSION: &str = "2025-01-05";
/// The largest answer body we read into memory (a page list of a very fragmented blob).
const MAX_BODY: u64 = 256 << 20;

/// Timeouts of one client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting.
    pub connect: Duration,
    /// A whole request, sending the body and receiving the answer included. 4 MiB at 1 MB/s
    /// takes 4 s; 120 s leaves room for a slow link without hanging on a dead one forever.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(120),
        }
    }
}

/// A Blob service client for one storage account.
pub struct AzureBlobClient {
    agent: ureq::Agent,
    /// The account's blob endpoint without a trailing slash, e.g.
    /// `https://acct.blob.core.windows.net` or `http://127.0.0.1:10000/devstoreaccount1`.
    endpoint: String,
    account: String,
    auth: Auth,
    /// Every request sent, when asked for ([`AzureBlobClient::with_request_log`]).
    log: Option<Mutex<Vec<Request>>>,
}

impl std::fmt::Debug for AzureBlobClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBlobClient")
            .field("endpoint", &self.endpoint)
            .field("account", &self.account)
            .field(
                "auth",
                &match self.auth {
                    Auth::SharedKey(_) => "shared key (redacted)",
                    Auth::Sas(_) => "SAS token (redacted)",
                },
            )
            .finish()
    }
}

impl Account {
    /// A client for this account.
    pub fn client(&self, timeouts: Timeouts) -> AzureBlobClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeouts.connect))
            .timeout_global(Some(timeouts.request))
            .max_idle_connections_per_host(64)
            .build();
        AzureBlobClient {
            agent: config.into(),
            endpoint: self.endpoint.clone(),
            account: self.account.clone(),
            auth: self.auth.clone(),
            log: None,
        }
    }
}

/// Characters left as they are in a blob path (RFC 3986 unreserved, plus '/').
const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Checks a container name against Azure's rules: 3–63 lower-case letters, digits and single
/// hyphens, starting and ending with a letter or digit.
///
/// # Errors
/// A name Azure would refuse, saying why.
pub fn check_container_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Error::argument(format!(
            "container name {name:?}: expected 3 to 63 lower-case letters, digits and single \
             hyphens, starting and ending with a letter or digit"
        )))
    }
}

/// Checks a blob name: 1–1024 characters, not ending with '.' or '/'.
///
/// # Errors
/// A name Azure would refuse.
pub fn check_blob_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 1024 || name.ends_with('.') || name.ends_with('/') {
        return Err(Error::argument(format!(
            "blob name {name:?}: expected 1 to 1024 characters, not ending with '.' or '/'"
        )));
    }
    Ok(())
}

fn transport_error(e: ureq::Error, secrets: &[&str]) -> BlobError {
    match e {
        ureq::Error::Timeout(_) => BlobError::Timeout,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            BlobError::Timeout
        }
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::RequireHttpsOnly(_) => {
            BlobError::Refused(redact(&e.to_string(), secrets))
        }
        other => BlobError::Connection(redact(&other.to_string(), secrets)),
    }
}

/// One request being built.
struct Call<'a> {
    method: &'static str,
    blob: Option<&'a BlobName>,
    container: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    headers: Vec<(String, String)>,
    body: Option<&'a [u8]>,
    op: Op,
    offset: u64,
    len: u64,
}

impl AzureBlobClient {
    /// This client, keeping a log of every request it sends (for tests: the log grows with
    /// every request, so it is off by default).
    pub fn with_request_log(mut self) -> Self {
        self.log = Some(Mutex::new(Vec::new()));
        self
    }

    /// Every request this client sent, in order (empty unless
    /// [`with_request_log`](Self::with_request_log) was asked for).
    pub fn requests(&self) -> Vec<Request> {
        self.log
            .as_ref()
            .map(|l| crate::sync::lock(l).clone())
            .unwrap_or_default()
    }

    /// The account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    fn secrets(&self) -> Vec<String> {
        match &self.auth {
            Auth::SharedKey(k) => vec![B64.encode(k)],
            Auth::Sas(q) => {
                let mut v: Vec<String> = q
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| k.eq_ignore_ascii_case("sig"))
                    .map(|(_, v)| v.to_string())
                    .collect();
                v.extend(v.clone().iter().map(|s| decode(s)));
                v
            }
        }
    }

    fn redact(&self, text: &str) -> String {
        let s = self.secrets();
        let refs: Vec<&str> = s.iter().map(String::as_str).collect();
        redact(text, &refs)
    }

    fn path_of(&self, c: &Call) -> String {
        use percent_encoding::utf8_percent_encode as enc;
        match (c.blob, c.container) {
            (Some(b), _) => format!(
                "/{}/{}",
                enc(&b.container, PATH_SET),
                enc(&b.blob, PATH_SET)
            ),
            (None, Some(cn)) => format!("/{}", enc(cn, PATH_SET)),
            (None, None) => String::new(),
        }
    }

    /// The SharedKey signature of a request.
    fn sign(&self, key: &[u8], c: &Call, url_path: &str, headers: &[(String, String)]) -> String {
        let endpoint_path = url::Url::parse(&self.endpoint)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        super::signing::sign(
            key,
            &super::signing::Canonical {
                method: c.method,
                content_length: c.body.map_or(0, <[u8]>::len),
                headers,
                resource: &format!("/{}{endpoint_path}{url_path}", self.account),
                query: &c.query,
            },
        )
    }

    fn send(&self, c: Call) -> Result<ureq::http::Response<ureq::Body>, BlobError> {
        if let Some(log) = &self.log {
            crate::sync::lock(log).push(Request {
                op: c.op,
                offset: c.offset,
                len: c.len,
                ok: false,
            });
        }
        let url_path = self.path_of(&c);
        let mut query: Vec<String> = c
            .query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect();
        let mut headers = c.headers.clone();
        headers.push(("x-ms-version".into(), API_VERSION.into()));
        headers.push((
            "x-ms-date".into(),
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        ));
        if c.body.is_some_and(|b| !b.is_empty()) {
            headers.push(("content-type".into(), "application/octet-stream".into()));
        }
        match &self.auth {
            Auth::SharedKey(key) => {
                let sig = self.sign(key, &c, &url_path, &headers);
                headers.push((
                    "authorization".into(),
                    format!("SharedKey {}:{sig}", self.account),
                ));
            }
            Auth::Sas(q) => query.push(q.clone()),
        }
        let mut url = format!("{}{url_path}", self.endpoint);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let secrets = self.secrets();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let result = match c.method {
            "GET" => {
                let mut r = self.agent.get(&url);
                for (k, v) in &headers {
                    r = r.header(k, v);
                }
                r.call()
            }
            "HEAD" => {
                let mut r = self.agent.head(&url);
                for (k, v) in &headers {
                    r = r.header(k, v);
                }
                r.call()
            }
            _ => {
                let mut r = self.agent.put(&url);
                for (k, v) in &headers {
                    r = r.header(k, v);
                }
                match c.body {
                    Some(b) if !b.is_empty() => r.send(b),
                    _ => r.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(|e| transport_error(e, &refs))?;
        let status = resp.status().as_u16();
        if status >= 300 {
            let code_header = resp
                .headers()
                .get("x-ms-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .unwrap_or_default();
            let (code, message) = parse_error_body(&String::from_utf8_lossy(&body));
            return Err(BlobError::Status {
                status,
                code: code_header
                    .or(code)
                    .unwrap_or_else(|| format!("HTTP{status}")),
                message: self.redact(&message.unwrap_or_default()),
            });
        }
        if let Some(log) = &self.log
            && let Some(last) = crate::sync::lock(log)
                .iter_mut()
                .rev()
                .find(|r| r.op == c.op && r.offset == c.offset && r.len == c.len && !r.ok)
        {
            last.ok = true;
        }
        Ok(resp)
    }

    fn read_body(
        &self,
        resp: &mut ureq::http::Response<ureq::Body>,
        limit: u64,
    ) -> Result<Vec<u8>, BlobError> {
        resp.body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| {
                let s = self.secrets();
                let refs: Vec<&str> = s.iter().map(String::as_str).collect();
                transport_error(e, &refs)
            })
    }
}

fn call<'a>(method: &'static str, op: Op, blob: &'a BlobName) -> Call<'a> {
    Call {
        method,
        blob: Some(blob),
        container: None,
        query: Vec::new(),
        headers: Vec::new(),
        body: None,
        op,
        offset: 0,
        len: 0,
    }
}

fn range_header(offset: u64, len: u64) -> (String, String) {
    (
        "x-ms-range".into(),
        format!("bytes={offset}-{}", offset + len - 1),
    )
}

/// Refuses, before sending, a page range the service would refuse (or Azurite would wrongly take).
fn check_pages(offset: u64, len: u64, max: Option<u64>) -> Result<(), BlobError> {
    if len == 0 || !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
        return Err(BlobError::Refused(format!(
            "page range {offset}+{len} is not 512-byte aligned"
        )));
    }
    if max.is_some_and(|m| len > m) {
        return Err(BlobError::Refused(format!(
            "a Put Page of {len} bytes is over the 4 MiB limit"
        )));
    }
    Ok(())
}

impl PageBlobStore for AzureBlobClient {
    fn create_container(&self, container: &str) -> Result<(), BlobError> {
        let c = Call {
            method: "PUT",
            blob: None,
            container: Some(container),
            query: vec![("restype", "container".into())],
            headers: Vec::new(),
            body: None,
            op: Op::CreateContainer,
            offset: 0,
            len: 0,
        };
        match self.send(c) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ContainerAlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn create(&self, blob: &BlobName, len: u64) -> Result<(), BlobError> {
        let mut c = call("PUT", Op::Create, blob);
        c.len = len;
        c.headers = vec![
            ("x-ms-blob-type".into(), "PageBlob".into()),
            ("x-ms-blob-content-length".into(), len.to_string()),
        ];
        self.send(c).map(drop)
    }

    fn put_pages(&self, blob: &BlobName, offset: u64, data: &[u8]) -> Result<(), BlobError> {
        let len = data.len() as u64;
        check_pages(offset, len, Some(MAX_PUT))?;
        let mut c = call("PUT", Op::PutPages, blob);
        c.query = vec![("comp", "page".into())];
        c.headers = vec![
            range_header(offset, len),
            ("x-ms-page-write".into(), "update".into()),
        ];
        c.body = Some(data);
        c.offset = offset;
        c.len = len;
        self.send(c).map(drop)
    }

    fn clear_pages(&self, blob: &BlobName, offset: u64, len: u64) -> Result<(), BlobError> {
        check_pages(offset, len, None)?;
        let mut c = call("PUT", Op::ClearPages, blob);
        c.query = vec![("comp", "page".into())];
        c.headers = vec![
            range_header(offset, len),
            ("x-ms-page-write".into(), "clear".into()),
        ];
        c.offset = offset;
        c.len = len;
        self.send(c).map(drop)
    }

    fn page_ranges(&self, blob: &BlobName) -> Result<Vec<(u64, u64)>, BlobError> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut marker: Option<String> = None;
        // A server that hands out markers in a cycle, or endless empty pages, must not keep us
        // here: every marker once, a bounded number of answers and of ranges (16 bytes each).
        let mut seen = std::collections::HashSet::new();
        const MAX_ANSWERS: usize = 1 << 20;
        const MAX_RANGES: usize = 1 << 26;
        loop {
            if seen.len() >= MAX_ANSWERS || out.len() > MAX_RANGES {
                return Err(BlobError::Status {
                    status: 200,
                    code: "BadPageList".into(),
                    message: format!(
                        "the page list did not end after {} answers and {} ranges",
                        seen.len(),
                        out.len()
                    ),
                });
            }
            let mut c = call("GET", Op::PageRanges, blob);
            c.query = vec![("comp", "pagelist".into())];
            if let Some(m) = &marker {
                c.query.push(("marker", m.clone()));
            }
            let mut resp = self.send(c)?;
            let body = self.read_body(&mut resp, MAX_BODY)?;
            let text = String::from_utf8_lossy(&body);
            let (ranges, next) = parse_page_list(&text).map_err(|m| BlobError::Status {
                status: 200,
                code: "BadPageList".into(),
                message: m,
            })?;
            if let (Some(&(po, pl)), Some(&(s, _))) = (out.last(), ranges.first())
                && po + pl > s
            {
                return Err(BlobError::Status {
                    status: 200,
                    code: "BadPageList".into(),
                    message: "a page list continuation goes backwards".into(),
                });
            }
            out.extend(ranges);
            match next {
                Some(n) if seen.insert(n.clone()) => marker = Some(n),
                Some(_) => {
                    return Err(BlobError::Status {
                        status: 200,
                        code: "BadPageList".into(),
                        message: "the same page list marker twice".into(),
                    });
                }
                None => return Ok(out),
            }
        }
    }

    fn read(&self, blob: &BlobName, offset: u64, buf: &mut [u8]) -> Result<(), BlobError> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len() as u64;
        let mut c = call("GET", Op::Read, blob);
        c.headers = vec![range_header(offset, len)];
        c.offset = offset;
        c.len = len;
        let mut resp = self.send(c)?;
        // The answer must be the range asked for, not the whole blob from its start.
        let want = format!("bytes {offset}-{}/", offset + len - 1);
        let range_ok = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(&want));
        if !range_ok {
            return Err(BlobError::status(
                resp.status().as_u16(),
                "BadAnswer",
                format!("the answer to a read of {want}… is not that range"),
            ));
        }
        let mut reader = resp.body_mut().with_config().limit(len + 1).reader();
        let mut done = 0;
        while done < buf.len() {
            match reader.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(if e.kind() == std::io::ErrorKind::TimedOut {
                        BlobError::Timeout
                    } else {
                        BlobError::Connection(self.redact(&e.to_string()))
                    });
                }
            }
        }
        if done != buf.len() {
            return Err(BlobError::Connection(format!(
                "short read: {done} of {len} bytes at offset {offset}"
            )));
        }
        Ok(())
    }

    fn properties(&self, blob: &BlobName) -> Result<Option<BlobProperties>, BlobError> {
        let c = call("HEAD", Op::Properties, blob);
        let resp = match self.send(c) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let h = resp.headers();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
        let len = get("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| BlobError::status(200, "BadAnswer", "no Content-Length"))?;
        let mut metadata = BTreeMap::new();
        for (k, v) in h {
            if let Some(name) = k.as_str().strip_prefix("x-ms-meta-")
                && let Ok(v) = v.to_str()
            {
                metadata.insert(name.to_ascii_lowercase(), v.to_string());
            }
        }
        let content_md5 = get("content-md5")
            .and_then(|v| B64.decode(v).ok())
            .and_then(|v| <[u8; 16]>::try_from(v).ok());
        Ok(Some(BlobProperties {
            len,
            page_blob: get("x-ms-blob-type") == Some("PageBlob"),
            metadata,
            content_md5,
        }))
    }

    fn set_metadata(
        &self,
        blob: &BlobName,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), BlobError> {
        let mut c = call("PUT", Op::SetMetadata, blob);
        c.query = vec![("comp", "metadata".into())];
        c.headers = metadata
            .iter()
            .map(|(k, v)| (format!("x-ms-meta-{k}"), v.clone()))
            .collect();
        self.send(c).map(drop)
    }

    fn set_content_md5(&self, blob: &BlobName, md5: &[u8; 16]) -> Result<(), BlobError> {
        let mut c = call("PUT", Op::SetContentMd5, blob);
        c.query = vec![("comp", "properties".into())];
        c.headers = vec![("x-ms-blob-content-md5".into(), B64.encode(md5))];
        self.send(c).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::azure::credentials::{DEV_ACCOUNT, DEV_ACCOUNT_KEY};

    // Connection strings and SAS URLs are parsed (and tested) in credentials.rs.

    #[test]
    fn secrets_are_redacted_everywhere() {
        assert_eq!(
            redact("GET /c/b?sv=1&sig=abc%2B== failed", &[]),
            "GET /c/b?sv=1&sig=REDACTED failed"
        );
        assert_eq!(
            redact("key KEY12345678 here", &["KEY12345678"]),
            "key REDACTED here"
        );
        let a = Account::shared_key(
            "http://127.0.0.1:1/devstoreaccount1",
            DEV_ACCOUNT,
            DEV_ACCOUNT_KEY,
        )
        .unwrap();
        let c = a.client(Timeouts::default());
        let dbg = format!("{c:?} {a:?}");
        assert!(
            !dbg.contains(DEV_ACCOUNT_KEY) && !dbg.contains("Eby8"),
            "{dbg}"
        );
        let s = Account::from_sas_url("https://acct.blob.core.windows.net/c/b?sv=1&sig=SECRETSIG")
            .unwrap();
        let dbg = format!("{s:?} {:?}", s.client(Timeouts::default()));
        assert!(!dbg.contains("SECRETSIG"), "{dbg}");
        // A connection to a closed port fails with an error that holds no secret (over https,
        // then over http below; never a real endpoint).
        let n = BlobName::new("c", "b");
        let e =
            Account::from_sas_url("https://127.0.0.1:1/devstoreaccount1/c/b?sv=1&sig=SECRETSIG")
                .unwrap()
                .client(Timeouts::default())
                .properties(&n)
                .unwrap_err();
        assert!(!e.to_string().contains("SECRETSIG"), "{e}");
        let c = Account::from_sas_url("http://127.0.0.1:1/devstoreaccount1/c/b?sv=1&sig=SECRETSIG")
            .unwrap()
            .client(Timeouts::default());
        let e = c.properties(&n).unwrap_err().to_string();
        assert!(!e.contains("SECRETSIG"), "{e}");
    }

    #[test]
    fn the_client_refuses_bad_pages_before_sending() {
        let c = Account::shared_key(
            "http://127.0.0.1:1/devstoreaccount1",
            DEV_ACCOUNT,
            DEV_ACCOUNT_KEY,
        )
        .unwrap()
        .client(Timeouts::default())
        .with_request_log();
        let n = BlobName::new("c", "b");
        assert!(matches!(
            c.put_pages(&n, 1, &[0; 512]),
            Err(BlobError::Refused(_))
        ));
        assert!(matches!(
            c.put_pages(&n, 0, &[0; 100]),
            Err(BlobError::Refused(_))
        ));
        assert!(matches!(
            c.put_pages(&n, 0, &vec![0; (MAX_PUT + 512) as usize]),
            Err(BlobError::Refused(_))
        ));
        assert!(matches!(
            c.clear_pages(&n, 0, 3),
            Err(BlobError::Refused(_))
        ));
        assert!(c.requests().is_empty(), "nothing was sent");
        // A legal one is sent (and fails: nothing listens on port 1), and logged.
        assert!(matches!(
            c.put_pages(&n, 0, &[0; 512]),
            Err(BlobError::Connection(_))
        ));
        assert_eq!(
            c.requests(),
            vec![Request {
                op: Op::PutPages,
                offset: 0,
                len: 512,
                ok: false
            }]
        );
    }

    #[test]
    fn shared_key_signature_matches_a_known_answer() {
        // The canonical string is built as the service documents; a fixed request and date
        // give a fixed signature (computed independently with Python's hmac module).
        let a = Account::shared_key(
            "http://127.0.0.1:10000/devstoreaccount1",
            DEV_ACCOUNT,
            DEV_ACCOUNT_KEY,
        )
        .unwrap();
        let client = a.client(Timeouts::default());
        let n = BlobName::new("c1", "b.vhd");
        let data = [0u8; 512];
        let mut c = call("PUT", Op::PutPages, &n);
        c.query = vec![("comp", "page".into())];
        c.body = Some(&data);
        let headers = vec![
            ("x-ms-range".to_string(), "bytes=0-511".to_string()),
            ("x-ms-page-write".to_string(), "update".to_string()),
            ("x-ms-version".to_string(), API_VERSION.to_string()),
            (
                "x-ms-date".to_string(),
                "Sun, 22 Nov 2026 06:00:00 GMT".to_string(),
            ),
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
        ];
        let Auth::SharedKey(key) = &a.auth else {
            panic!()
        };
        let sig = client.sign(key, &c, "/c1/b.vhd", &headers);
        assert_eq!(sig, KNOWN_SIG);
    }

    /// Every answer kind becomes the error kind a caller acts on, keeps the status and Azure's
    /// code (from `x-ms-error-code` or the XML body), and only transient ones are retried.
    #[test]
    fn error_kinds_from_canned_answers() {
        use crate::cloud::canned::{Answer, Canned, response};
        use crate::cloud::retry::RetryPolicy;
        use crate::error::ErrorKind;
        let policy = RetryPolicy {
            attempts: 3,
            base_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(2),
        };
        let xml = |code: &str| {
            format!(
                "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code>\
                 <Message>canned {code} for sig=SECRETSIG\nRequestId:1</Message></Error>"
            )
        };
        let cases: [(u16, &str, bool, ErrorKind, bool); 6] = [
            (
                403,
                "AuthorizationPermissionMismatch",
                true,
                ErrorKind::Denied,
                false,
            ),
            (404, "BlobNotFound", false, ErrorKind::NotFound, false),
            (409, "LeaseIdMissing", false, ErrorKind::Conflict, false),
            (412, "ConditionNotMet", true, ErrorKind::Conflict, false),
            (429, "TooManyRequests", false, ErrorKind::Cloud, true),
            (500, "InternalError", false, ErrorKind::Cloud, true),
        ];
        let n = BlobName::new("c", "b");
        for (status, code, header, kind, transient) in cases {
            let body = xml(code);
            let mut headers = vec![("Content-Type", "application/xml")];
            if header {
                headers.push(("x-ms-error-code", code));
            }
            let server = Canned::start(response(status, &headers, &body));
            let client = Account::from_sas_url(&format!(
                "{}/devstoreaccount1/c/b?sv=1&sig=SECRETSIG",
                server.url()
            ))
            .unwrap()
            .client(Timeouts::default());
            let e = policy
                .run("Put Page", || client.put_pages(&n, 0, &[1; 512]))
                .unwrap_err();
            assert_eq!(e.kind(), kind, "{status}: {e}");
            let c = e.cloud().expect("a cloud error");
            assert_eq!((c.service, c.status), ("blob", Some(status)), "{e}");
            assert_eq!(c.code.as_deref(), Some(code), "{status}");
            assert_eq!(e.is_transient(), transient, "{status}");
            assert_eq!(server.hits(), if transient { 3 } else { 1 }, "{status}");
            let chain = format!("{e} {:?}", std::error::Error::source(&e));
            assert!(!chain.contains("SECRETSIG"), "{chain}");
        }
        // No answer in time: a transient cloud error without a status, retried.
        let server = Canned::start(Answer::Hang(std::time::Duration::from_secs(3)));
        let client = Account::from_sas_url(&format!(
            "{}/devstoreaccount1/c/b?sv=1&sig=SECRETSIG",
            server.url()
        ))
        .unwrap()
        .client(Timeouts {
            connect: std::time::Duration::from_secs(2),
            request: std::time::Duration::from_millis(300),
        });
        let e = policy
            .run("Put Page", || client.put_pages(&n, 0, &[1; 512]))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cloud, "{e}");
        let c = e.cloud().expect("a cloud error");
        assert_eq!((c.status, c.code.as_deref()), (None, Some("Timeout")));
        assert!(e.is_transient());
        assert_eq!(server.hits(), 3);
    }

    const KNOWN_SIG: &str = "tYSxgDGurAseuvyfjof9/vJykrwDMsEiBeBbthrZSwg=";
}
