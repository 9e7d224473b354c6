//! SharedKey authorization: the HMAC-SHA256, with the account key, of the canonical string of
//! a request, as the service's "Authorize with Shared Key" document defines it (verb, standard
//! headers, the sorted `x-ms-` headers, then the canonical resource and its sorted query).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};

/// What of a request the signature covers.
pub(crate) struct Canonical<'a> {
    /// `GET`, `PUT`, `HEAD`.
    pub method: &'a str,
    /// The body's length (0 is written as empty, as version 2015-02-21 and later require).
    pub content_length: usize,
    /// Every header sent (names in any case).
    pub headers: &'a [(String, String)],
    /// `/account` + the URL's path (which, path-style, repeats the account).
    pub resource: &'a str,
    /// The query parameters, unencoded.
    pub query: &'a [(&'a str, String)],
}

/// The canonical string of `c`.
pub(crate) fn string_to_sign(c: &Canonical) -> String {
    let get = |name: &str| {
        c.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    };
    let content_length = if c.content_length == 0 {
        String::new()
    } else {
        c.content_length.to_string()
    };
    let mut ms: Vec<(String, &str)> = c
        .headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
        .collect();
    ms.sort();
    let mut s = format!(
        "{}\n\n\n{content_length}\n{}\n{}\n\n\n\n\n\n{}\n",
        c.method,
        get("content-md5"),
        get("content-type"),
        get("range"),
    );
    for (k, v) in ms {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push_str(c.resource);
    let mut q: Vec<(String, &str)> = c
        .query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    q.sort();
    for (k, v) in q {
        s.push_str(&format!("\n{k}:{v}"));
    }
    s
}

/// The base64 signature of `c` with the (decoded) account `key`.
pub(crate) fn sign(key: &[u8], c: &Canonical) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(string_to_sign(c).as_bytes());
    B64.encode(mac.finalize().into_bytes())
}
