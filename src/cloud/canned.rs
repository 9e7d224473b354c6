//! A tiny HTTP server on 127.0.0.1 for unit tests: it answers every request with one fixed
//! response (or never answers, to make the client time out) and counts the requests it read, so
//! a test can check a client's error kinds and how often it retried.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

/// What the server does with each request.
#[derive(Clone)]
pub(crate) enum Answer {
    /// Sends these bytes (a whole HTTP/1.1 response) and closes the connection.
    Respond(Vec<u8>),
    /// Reads the request, then waits this long without answering and closes.
    Hang(Duration),
}

/// A response with `status`, extra `headers` and `body`, closing the connection.
pub(crate) fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut r = format!("HTTP/1.1 {status} Canned\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    Answer::Respond(r.into_bytes())
}

/// A running server.
pub(crate) struct Canned {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Canned {
    /// Starts a server answering every request with `answer`.
    pub fn start(answer: Answer) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (answer, h) = (answer.clone(), h.clone());
                std::thread::spawn(move || serve(conn, &answer, &h));
            }
        });
        Canned { addr, hits }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests read so far.
    pub fn hits(&self) -> usize {
        self.hits.load(SeqCst)
    }
}

fn serve(mut conn: TcpStream, answer: &Answer, hits: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if conn.read_exact(&mut body).is_err() {
        return;
    }
    hits.fetch_add(1, SeqCst);
    match answer {
        Answer::Respond(bytes) => {
            let _ = conn.write_all(bytes);
            let _ = conn.flush();
        }
        Answer::Hang(d) => std::thread::sleep(*d),
    }
}
