//! Raw HTTP/1.0 exchanges with a Shoal process's API, signed with the harness's operator key or
//! not, and a `shoal proxy` to go through. Included with `#[path]` beside `support/mesh.rs`
//! (as `harness`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::harness::{self, Proc, Work, loopback_listen, operator_key};
use shoal_core::keys::SecretKey;
use shoal_core::operator::RequestAuth;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a process may take to answer one request.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// What a process answered.
#[derive(Debug)]
pub struct Answer {
    /// The status code (0: not an HTTP answer).
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The body as JSON (null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// `METHOD path` on `addr` with `headers` (each line ending in CRLF) and a JSON `body`; `None`
/// when nothing listens there.
pub fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Some(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// `METHOD path` with a JSON `body`, unsigned (or through a proxy, which signs).
///
/// # Panics
///
/// When nothing listens at `addr`.
pub fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    exchange(addr, method, path, "", body)
        .unwrap_or_else(|| panic!("{method} {path}: nothing listens on {addr}"))
}

/// The harness's operator key, which every trust document it writes names with every scope.
pub fn operator() -> SecretKey {
    SecretKey::from_text(&std::fs::read_to_string(operator_key()).unwrap()).unwrap()
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `METHOD path` with a JSON `body`, signed by `key` now with a fresh nonce.
///
/// # Panics
///
/// When nothing listens at `addr`.
pub fn signed(key: &SecretKey, addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    let auth = RequestAuth::sign(
        key,
        method,
        path,
        body.as_bytes(),
        unix_now(),
        rand::random(),
    );
    exchange(
        addr,
        method,
        path,
        &format!("Authorization: {}\r\n", auth.header()),
        body,
    )
    .unwrap_or_else(|| panic!("{method} {path}: nothing listens on {addr}"))
}

/// Starts `shoal proxy` to `coordinator` on a loopback port and waits until it listens.
/// Returns the process (stopped when dropped) and its address.
pub fn start_proxy(work: &Work, coordinator: SocketAddr) -> (Proc, SocketAddr) {
    let at = loopback_listen();
    let proxy = Proc::spawn(
        work,
        "proxy",
        None,
        at,
        &[
            "proxy",
            "--coordinator",
            &coordinator.to_string(),
            "--listen",
            &at.to_string(),
        ],
    );
    let start = Instant::now();
    while TcpStream::connect(at).is_err() {
        assert!(
            start.elapsed() < harness::READY_WITHIN,
            "shoal proxy does not listen on {at}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (proxy, at)
}
