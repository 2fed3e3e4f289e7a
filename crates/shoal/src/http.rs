//! A small HTTP/1.0 client for a Shoal process's API (JSON in, JSON out), which signs each
//! request with the operator key when it has one ([`Signer`]).

use crate::failure::{Code, Failure};
use clap::Args;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_core::keys::{Role, SecretKey};
use shoal_core::operator::RequestAuth;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest answer read.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// The environment variable naming the operator key file.
pub const OPERATOR_KEY_ENV: &str = "SHOAL_OPERATOR_KEY";

/// `--key`: the operator key that signs requests to the coordinator.
#[derive(Args, Debug, Clone)]
pub struct OperatorKeyArg {
    /// The operator key that signs the requests (default: $SHOAL_OPERATOR_KEY). The
    /// coordinator refuses unsigned requests.
    #[arg(long = "key", value_name = "OPERATOR_KEY", env = OPERATOR_KEY_ENV)]
    pub key: Option<PathBuf>,
}

impl OperatorKeyArg {
    /// The signer it names.
    ///
    /// # Errors
    ///
    /// If the key file cannot be read or is not an operator key.
    pub fn signer(&self) -> Result<Signer, Failure> {
        Signer::load(self.key.as_deref())
    }
}

/// Signs requests with an operator key, or sends them unsigned (to nodes, which take reads
/// without one, and to show the coordinator's refusal).
#[derive(Debug, Default)]
pub struct Signer {
    key: Option<SecretKey>,
}

impl Signer {
    /// A signer that sends requests unsigned.
    pub fn unsigned() -> Self {
        Self::default()
    }

    /// A signer with the operator key in `path`, or unsigned without one.
    ///
    /// # Errors
    ///
    /// If the file cannot be read or is not an operator key.
    pub fn load(path: Option<&Path>) -> Result<Self, Failure> {
        let key = match path {
            Some(path) if !path.as_os_str().is_empty() => {
                Some(crate::keyfile::read_secret(path, Role::Operator)?)
            }
            _ => None,
        };
        Ok(Self { key })
    }

    /// Whether it signs (it has a key).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The key's fingerprint, if it has one.
    pub fn key_name(&self) -> Option<String> {
        self.key.as_ref().map(|k| k.public().fingerprint())
    }

    /// The `Authorization` header for a request, if it has a key.
    pub fn header(&self, method: &str, path: &str, body: &[u8]) -> Option<String> {
        let key = self.key.as_ref()?;
        let auth = RequestAuth::sign(
            key,
            method,
            path,
            body,
            crate::commands::unix_now(),
            rand::random(),
        );
        Some(auth.header())
    }

    /// `GET path` on the API at `addr`.
    ///
    /// # Errors
    ///
    /// When the call fails or the answer is not a 200 with `T` in it.
    pub fn get<T: DeserializeOwned>(&self, addr: SocketAddr, path: &str) -> Result<T, Failure> {
        self.exchange(addr, "GET", path, None, Duration::from_secs(10))
    }

    /// `GET path` on the API at `addr`, waiting up to `timeout` for the answer.
    ///
    /// # Errors
    ///
    /// When the call fails or the answer is not a 200 with `T` in it.
    pub fn get_within<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<T, Failure> {
        self.exchange(addr, "GET", path, None, timeout)
    }

    /// `POST path` with a JSON `body` on the API at `addr`; waits up to `timeout` for the
    /// answer.
    ///
    /// # Errors
    ///
    /// When the call fails or the answer is not a 200 with `T` in it.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, Failure> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Failure::new(Code::General, format!("cannot encode the request: {e}")))?;
        self.exchange(addr, "POST", path, Some(&body), timeout)
    }

    fn exchange<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<T, Failure> {
        let auth = self.header(method, path, body.unwrap_or_default());
        exchange(addr, method, path, body, auth.as_deref(), timeout)
    }
}

/// `GET path` on the API at `addr`, unsigned: for a node's API.
pub fn get<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T, Failure> {
    Signer::unsigned().get(addr, path)
}

/// `POST path` with a JSON `body`, unsigned: for a node's API.
pub fn post<B: Serialize, T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    body: &B,
    timeout: Duration,
) -> Result<T, Failure> {
    Signer::unsigned().post(addr, path, body, timeout)
}

fn exchange<T: DeserializeOwned>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    authorization: Option<&str>,
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
    if let Some(auth) = authorization {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
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
