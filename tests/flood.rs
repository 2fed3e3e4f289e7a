//! A peer opening connections as fast as it can against a real `shoal seed`: the attempts past
//! its per-address burst are refused before any handshake, the seed's memory stays flat, and an
//! honest `shoal fetch` started in the middle of the flood finishes.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Instant;
use support::Fixture;
use support::flooder::Flooder;
use support::swarm_procs::{check_copy, done, fetch, release, seed, status};

/// Attempts per wave of the flood; the seed takes a burst of 16 from one address, then 4 a second.
const WAVE: usize = 400;
/// Waves before and after the honest fetch starts.
const WAVES: usize = 3;
/// What the seed may grow by over the whole flood. Refused attempts cost it nothing it keeps;
/// the few taken on are closed when they send no control stream within 5 s.
const MAX_RSS_GROWTH_BYTES: u64 = 32 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_connection_flood_is_refused_fast_and_honest_fetches_finish() {
    let f = Fixture::new();
    let size = 4 * 1024 * 1024;
    let root = release(&f, size);
    let (origin, addr) = seed(&f, "app.manifest", "payload.bin", &[]);
    let pid = origin.0.id();
    let rss_before = rss_bytes(pid);
    let mut flooder = Flooder::new();
    let started = Instant::now();
    let mut total = support::flooder::Flooded::default();
    let mut honest = None;
    for wave in 0..2 * WAVES {
        if wave == WAVES {
            honest = Some(fetch(&f, "app.manifest", "node", &[addr], &[]));
        }
        let got = flooder.flood(addr, WAVE);
        total.refused += got.refused;
        total.connected += got.connected;
        total.other += got.other;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let attempts = 2 * WAVES * WAVE;
    // One address gets its burst and its rate over the flood's duration, nothing more.
    let allowed = 16 + (4.0 * flood_secs).ceil() as usize;
    eprintln!(
        "flood: {attempts} attempts in {flood_secs:.1} s: {} refused, {} connected, {} other",
        total.refused, total.connected, total.other
    );
    assert!(
        total.connected <= allowed,
        "{} attempts from one address got a connection in {flood_secs:.1} s; at most {allowed} may",
        total.connected
    );
    assert!(
        total.refused >= attempts - allowed - total.other,
        "only {} of {attempts} attempts were refused outright: {total:?}",
        total.refused
    );
    let (_fetch, _, rx) = honest.unwrap();
    let result = done(&rx, "fetch during the flood");
    check_copy(&f, &result, &root, size as u64);
    let seen = status(addr).unwrap();
    let counted = seen["refused_connections"].as_u64().unwrap();
    assert!(
        counted >= total.refused as u64,
        "the seed counts {counted} refused attempts; the flooder saw {}",
        total.refused
    );
    let growth = rss_bytes(pid).saturating_sub(rss_before);
    eprintln!("seed RSS grew by {} KiB over the flood", growth >> 10);
    assert!(
        growth <= MAX_RSS_GROWTH_BYTES,
        "the seed grew by {growth} bytes over the flood"
    );
}
