//! A small QMP client (QEMU Machine Protocol: JSON lines over a unix socket): the greeting,
//! `qmp_capabilities`, then one command at a time; asynchronous events that arrive meanwhile
//! (`SHUTDOWN`, `RESET`, `STOP`) are kept for the caller. Every read has a timeout, so a hung
//! qemu cannot hang the boot check.

use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one command may take to answer (a screendump of a large screen under TCG is the
/// slowest, well under a second here).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// An event qemu sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// Its name (`SHUTDOWN`, `RESET`, `STOP`, ...).
    pub event: String,
    /// Its data (for `SHUTDOWN`: `guest`, `reason`).
    pub data: Value,
}

/// A connected QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events received so far, oldest first.
    pub events: Vec<Event>,
    /// The qemu version from the greeting (major, minor, micro).
    pub version: (u64, u64, u64),
}

impl Qmp {
    /// Connects to the socket at `path`, retrying until `deadline` while qemu starts, and
    /// negotiates capabilities.
    ///
    /// # Errors
    /// The socket never accepts before the deadline, or qemu's greeting is not QMP.
    pub fn connect(path: &Path, deadline: Instant, alive: &mut dyn FnMut() -> bool) -> Result<Qmp> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if Instant::now() >= deadline || !alive() {
                        return Err(Error::io(
                            format!("connecting to qemu's QMP socket {}", path.display()),
                            e,
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(|e| Error::io("setting the QMP read timeout", e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| Error::io("cloning the QMP socket", e))?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
            version: (0, 0, 0),
        };
        let greeting = q.read_message()?;
        let v = &greeting["QMP"]["version"]["qemu"];
        if greeting.get("QMP").is_none() {
            return Err(Error::invalid(format!(
                "qemu's QMP socket greeted with {greeting}, expected {{\"QMP\": ...}}"
            )));
        }
        q.version = (
            v["major"].as_u64().unwrap_or(0),
            v["minor"].as_u64().unwrap_or(0),
            v["micro"].as_u64().unwrap_or(0),
        );
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| Error::io("reading from qemu's QMP socket", e))?;
        if n == 0 {
            return Err(Error::io(
                "reading from qemu's QMP socket",
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "qemu closed the socket"),
            ));
        }
        serde_json::from_str(&line).map_err(|e| {
            Error::invalid(format!(
                "qemu sent a QMP line that is not JSON: {}",
                line.trim()
            ))
            .with_source(e)
        })
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    ///
    /// # Errors
    /// The socket fails, or qemu answers with an error (its class and description in the
    /// message).
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let msg = json!({ "execute": command, "arguments": arguments });
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| Error::io(format!("sending {command} to qemu"), e))?;
        loop {
            let m = self.read_message()?;
            if let Some(ev) = m.get("event").and_then(Value::as_str) {
                self.events.push(Event {
                    event: ev.to_string(),
                    data: m.get("data").cloned().unwrap_or(Value::Null),
                });
                continue;
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(Error::unsupported(format!(
                    "qemu refused {command}: {} ({})",
                    e["desc"].as_str().unwrap_or("no description"),
                    e["class"].as_str().unwrap_or("?")
                )));
            }
        }
    }

    /// `true` when the qemu is at least `major.minor`.
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }
}
