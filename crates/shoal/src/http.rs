//! A small HTTP/1.0 client for a Shoal process's local API (JSON in, JSON out).

use crate::failure::{Code, Failure};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest answer read.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// `GET path` on the API at `addr`.
pub fn get<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T, Failure> {
    exchange(addr, "GET", path, None, Duration::from_secs(10))
}

/// `POST path` with a JSON `body` on the API at `addr`; waits up to `timeout` for the answer.
pub fn post<B: Serialize, T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    body: &B,
    timeout: Duration,
) -> Result<T, Failure> {
    let body = serde_json::to_vec(body)
        .map_err(|e| Failure::new(Code::General, format!("cannot encode the request: {e}")))?;
    exchange(addr, "POST", path, Some(&body), timeout)
}

fn exchange<T: DeserializeOwned>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<T, Failure> {
    let fail =
        |what: String| Failure::new(Code::General, format!("{method} {path} on {addr}: {what}"));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| fail(format!("{e} (is a shoal process listening there?)")))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body.unwrap_or_default()))
        .map_err(|e| fail(e.to_string()))?;
    let mut response = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut response)
        .map_err(|e| fail(e.to_string()))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail("not an HTTP response".into()))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let answer = &response[split + 4..];
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if !head.starts_with("HTTP/1.") || status != "200" {
        let message = serde_json::from_slice::<serde_json::Value>(answer)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| {
                format!("unexpected answer {:?}", head.lines().next().unwrap_or(""))
            });
        return Err(fail(message));
    }
    serde_json::from_slice(answer).map_err(|e| fail(format!("bad answer: {e}")))
}
