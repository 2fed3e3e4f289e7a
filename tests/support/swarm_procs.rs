//! `shoal seed` and `shoal fetch` processes for the end-to-end swarm tests: start them on free
//! loopback addresses, read their status and results, check their copies.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::{Fixture, b3sum, shoal};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_addr() -> SocketAddr {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

pub fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    let out = shoal()
        .args(["status", "--node", &addr.to_string(), "--json"])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

pub fn wait_for_status(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(addr).is_none() {
        assert!(
            Instant::now() < deadline,
            "no status from {addr} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `shoal seed` for `manifest` and waits until it answers.
pub fn seed(f: &Fixture, manifest: &str, payload: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    seed_at(f, free_addr(), manifest, payload, extra)
}

/// Starts `shoal seed` listening on `addr` and waits until it answers.
pub fn seed_at(
    f: &Fixture,
    addr: SocketAddr,
    manifest: &str,
    payload: &str,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let child = shoal()
        .current_dir(f.path())
        .args([
            "seed",
            manifest,
            "--file",
            payload,
            "--trust",
            "trust.json",
            "--data-dir",
            "origin",
        ])
        .args(["--listen", &addr.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_for_status(addr);
    (proc, addr)
}

/// Starts `shoal fetch --json` into `dir` from `peers`; returns the process, its address and a
/// channel that yields its first stdout line.
pub fn fetch(
    f: &Fixture,
    manifest: &str,
    dir: &str,
    peers: &[SocketAddr],
    extra: &[&str],
) -> (Proc, SocketAddr, mpsc::Receiver<String>) {
    let addr = free_addr();
    let mut cmd = shoal();
    cmd.current_dir(f.path())
        .args([
            "fetch",
            manifest,
            "--trust",
            "trust.json",
            "--data-dir",
            dir,
            "--json",
        ])
        .args(["--listen", &addr.to_string()]);
    for p in peers {
        cmd.args(["--peer", &p.to_string()]);
    }
    let mut child = cmd.args(extra).stdout(Stdio::piped()).spawn().unwrap();
    let rx = first_line(child.stdout.take().unwrap());
    (Proc(child), addr, rx)
}

pub fn first_line(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Some(Ok(line)) = BufReader::new(stdout).lines().next() {
            let _ = tx.send(line);
        }
    });
    rx
}

pub fn done(rx: &mpsc::Receiver<String>, what: &str) -> serde_json::Value {
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("{what}: no result within 120 s"));
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["ok"], true, "{what}: {line}");
    value
}

/// Checks a finished fetch: right root and size, and the file's b3sum is the root.
pub fn check_copy(f: &Fixture, result: &serde_json::Value, root: &str, size: u64) {
    assert_eq!(result["root"], root);
    assert_eq!(result["bytes"], size);
    let path = f.path().join(result["path"].as_str().unwrap());
    assert_eq!(
        b3sum(&path),
        root,
        "payload at {} differs from the release",
        path.display()
    );
}

/// A fixture with a published release of `size` bytes in 64 KiB pieces; returns its root.
pub fn release(f: &Fixture, size: usize) -> String {
    f.payload("payload.bin", size, 11);
    let created = f.create("payload.bin", "app.manifest", &["--piece-size", "65536"]);
    created["root"].as_str().unwrap().to_owned()
}

/// Waits (up to 60 s) until the fetch whose API is at `addr` holds at least `pieces` pieces.
pub fn wait_for_pieces(addr: SocketAddr, pieces: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(addr)
        .and_then(|s| s["releases"][0]["have"].as_u64())
        .unwrap_or(0)
        < pieces
    {
        assert!(Instant::now() < deadline, "fetch made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}
