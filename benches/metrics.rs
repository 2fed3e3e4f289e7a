//! `/metrics` under a running swarm: a `shoal fetch` pulling a release from a `shoal seed` on
//! loopback as fast as both cores allow, scraped every `SHOAL_METRICS_EVERY_MS` (20) until it
//! is done. Prints the scrapes' count, their latency as a client sees it (connect, request,
//! whole answer) at p50, p99 and max, their size, and the fetch's progress across them.
//!
//! `cargo bench -p shoal --bench metrics` fetches 1 GiB (`SHOAL_METRICS_BYTES`) uncapped (or at
//! `SHOAL_METRICS_DOWNLOAD_LIMIT`, e.g. `1gbit`); under
//! `cargo test` it fetches 64 MiB at 200 Mbit/s and fails if no scrape came during the
//! transfer or one was over the goal's 64 KiB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::Fixture;
use support::swarm_procs::{fetch, release, seed, wait_for_status};

/// The goal's ceiling on a scrape's size.
const MAX_BYTES: usize = 64 << 10;

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name} is {v:?}: use a whole number"))
        })
        .unwrap_or(default)
}

/// One scrape: its latency and the answer's body.
fn scrape(addr: SocketAddr) -> (Duration, String) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let took = started.elapsed();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (took, body)
}

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let bytes = number(
        "SHOAL_METRICS_BYTES",
        if smoke { 64 << 20 } else { 1 << 30 },
    );
    let every = Duration::from_millis(number("SHOAL_METRICS_EVERY_MS", 20));
    let f = Fixture::new();
    release(&f, bytes as usize);
    let (_seed, seed_addr) = seed(&f, "app.manifest", "payload.bin", &[]);
    // The smoke run's debug build would be done before its API answers: it is capped, so the
    // scrapes come while the swarm runs. `SHOAL_METRICS_DOWNLOAD_LIMIT` caps the bench's.
    let limit = std::env::var("SHOAL_METRICS_DOWNLOAD_LIMIT")
        .ok()
        .or_else(|| smoke.then(|| "200mbit".to_owned()));
    let cap: Vec<&str> = match &limit {
        Some(l) => vec!["--download-limit", l],
        None => Vec::new(),
    };
    let (_fetch, fetch_addr, done) = fetch(&f, "app.manifest", "copy", &[seed_addr], &cap);
    wait_for_status(fetch_addr);
    let mut times = Vec::new();
    let mut sizes = Vec::new();
    let mut received = Vec::new();
    let started = Instant::now();
    while done.try_recv().is_err() {
        let (took, body) = scrape(fetch_addr);
        times.push(took.as_secs_f64() * 1e3);
        sizes.push(body.len());
        received.push(value(
            &body,
            "shoal_piece_bytes_total{direction=\"received\"}",
        ));
        std::thread::sleep(every);
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the fetch did not finish in 10 minutes"
        );
    }
    let transfer = started.elapsed().as_secs_f64();
    // Scrapes taken while bytes were still arriving.
    let during = received
        .iter()
        .filter(|&&r| r.is_finite() && r < bytes as f64)
        .count();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let at =
        |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
    let largest = sizes.iter().copied().max().unwrap_or(0);
    println!(
        "/metrics of a shoal fetch pulling {} MiB from a shoal seed on loopback, {} ({transfer:.2} s): \
         {} scrapes, {during} while bytes were arriving; latency p50 {:.2} ms, p99 {:.2} ms, max \
         {:.2} ms; size {} to {largest} bytes (goals: 5 ms, 64 KiB)",
        bytes >> 20,
        limit
            .as_deref()
            .map_or("uncapped".to_owned(), |l| format!("capped at {l}")),
        times.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        sizes.iter().copied().min().unwrap_or(0),
    );
    if smoke {
        assert!(during > 0, "no scrape came while the swarm ran");
        assert!(largest <= MAX_BYTES, "a scrape was {largest} bytes");
    }
}
