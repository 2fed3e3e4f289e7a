//! End-to-end swarm tests: real `shoal seed` and `shoal fetch` processes on loopback QUIC, and a
//! misbehaving peer that speaks the real protocol (tests/support/bad_peer.rs).
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::bad_peer::{BadPeer, Misbehaviour};
use support::swarm_procs::{
    Proc, check_copy, done, fetch, free_addr, release, seed, seed_at, status, wait_for_pieces,
    wait_for_status,
};
use support::{Fixture, json, run, shoal};

#[test]
fn nodes_fetch_from_the_origin_and_each_other() {
    let f = Fixture::new();
    let size = 3 * 1024 * 1024 + 123;
    let root = release(&f, size);
    // The origin's upload is capped so the fetchers must trade among themselves to finish early.
    let (_origin, origin) = seed(
        &f,
        "app.manifest",
        "payload.bin",
        &["--upload-limit", "8MiB/s"],
    );
    let fetches: Vec<_> = (0..3)
        .map(|i| {
            fetch(
                &f,
                "app.manifest",
                &format!("node{i}"),
                &[origin],
                &["--seed-secs", "60"],
            )
        })
        .collect();
    for (i, (_, addr, rx)) in fetches.iter().enumerate() {
        let result = done(rx, &format!("node{i}"));
        check_copy(&f, &result, &root, size as u64);
        let s = status(*addr).unwrap();
        let r = &s["releases"][0];
        assert_eq!(r["root"], root.as_str());
        assert_eq!(r["complete"], true);
        assert_eq!(r["have"], r["total"]);
        assert_eq!(r["total"], 49);
    }
    let origin_status = status(origin).unwrap();
    let r = &origin_status["releases"][0];
    assert_eq!(r["origin"], true);
    let sent = r["bytes_up"].as_u64().unwrap();
    // Three copies went out; the origin sent well under three of them.
    assert!(
        sent < 2 * size as u64,
        "origin sent {sent} bytes for a {size}-byte release"
    );
    // The human status names the release and its progress.
    let out = run(f.path(), &["status", "--node", &fetches[0].1.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("api@1.0.0") && text.contains("49/49"),
        "{text}"
    );
}

#[test]
fn a_node_serves_the_releases_in_its_store() {
    let f = Fixture::new();
    let size = 700_000;
    let root = release(&f, size);
    support::ok(
        f.path(),
        &[
            "store",
            "import",
            "app.manifest",
            "--file",
            "payload.bin",
            "--trust",
            "trust.json",
            "--data-dir",
            "nd",
        ],
    );
    let addr = free_addr();
    let _node = Proc(
        shoal()
            .current_dir(f.path())
            .args([
                "node",
                "--data-dir",
                "nd",
                "--listen",
                &addr.to_string(),
                "--labels",
                "region=r1,rack=2",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_status(addr);
    let s = status(addr).unwrap();
    assert_eq!(s["labels"], "rack=2,region=r1");
    assert_eq!(s["releases"][0]["root"], root.as_str());
    assert_eq!(s["releases"][0]["complete"], true);
    let (_fetch, _, rx) = fetch(&f, "app.manifest", "fetched", &[addr], &[]);
    check_copy(&f, &done(&rx, "fetch from a node"), &root, size as u64);
}

#[test]
fn the_demo_swarms_a_release_then_rolls_a_service_out_and_stops_a_bad_build() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "demo",
            "--nodes",
            "2",
            "--size",
            "1MiB",
            "--rate",
            "400mbit",
            "--dir",
            "work",
            "--bad-release",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", support::stderr(&out));
    assert!(text.contains("all 2 copies verified"), "{text}");
    assert!(text.contains("Kumar-Ross bound"), "{text}");
    assert!(
        text.contains("counts the release complete on 2 of 2 nodes"),
        "{text}"
    );
    assert!(text.contains("rollout 1 of hello 1.0: completed"), "{text}");
    assert!(
        text.contains("rollout 2 of hello 2.0: rolled_back"),
        "{text}"
    );
    for node in ["node0", "node1"] {
        assert!(text.contains(&format!("{node}: hello 1.0")), "{text}");
    }
    // Without --keep the work directory is removed.
    assert!(!dir.path().join("work").exists());
}

#[test]
fn a_killed_fetch_resumes_without_fetching_again_what_it_had() {
    let f = Fixture::new();
    let size = 8 * 1024 * 1024;
    let root = release(&f, size);
    let (_origin, origin) = seed(
        &f,
        "app.manifest",
        "payload.bin",
        &["--upload-limit", "2MiB/s"],
    );
    let (mut first, addr, _rx) = fetch(&f, "app.manifest", "node", &[origin], &[]);
    wait_for_pieces(addr, 64);
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let list = json(&run(
        f.path(),
        &["store", "list", "--data-dir", "node", "--json"],
    ));
    let kept = list["releases"][0]["have"].as_u64().unwrap();
    // The store flushes pieces in batches of at most a second (or 64 MiB): at 2 MiB/s the kill
    // takes at most about 32 of the 64 pieces held, never all of them.
    assert!(
        kept >= 64 - 40,
        "only {kept} of at least 64 pieces survived the kill"
    );
    assert!(kept < 128, "the fetch finished before it was killed");

    let (_second, _, rx) = fetch(&f, "app.manifest", "node", &[origin], &[]);
    let result = done(&rx, "resumed fetch");
    check_copy(&f, &result, &root, size as u64);
    let fetched = result["bytes_from_peers"].as_u64().unwrap();
    let missing = (128 - kept) * 65536;
    assert!(
        fetched <= missing,
        "resume fetched {fetched} bytes; only {missing} were missing"
    );
}

/// A fetch killed and restarted while a second fetch shares the origin: the origin has sent the
/// killed fetch pieces it lost (the unflushed batch), and sends them again to it rather than
/// declining them as on their way elsewhere, so both finish.
#[test]
fn a_killed_fetch_beside_another_resumes_from_the_origin() {
    let f = Fixture::new();
    let size = 8 * 1024 * 1024;
    let root = release(&f, size);
    let (_origin, origin) = seed(
        &f,
        "app.manifest",
        "payload.bin",
        &["--upload-limit", "2MiB/s"],
    );
    let (_other, _, other_rx) = fetch(&f, "app.manifest", "other", &[origin], &[]);
    let (mut first, addr, _rx) = fetch(&f, "app.manifest", "node", &[origin], &[]);
    wait_for_pieces(addr, 24);
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let (_second, _, rx) = fetch(&f, "app.manifest", "node", &[origin], &[]);
    let resumed = done(&rx, "resumed fetch");
    check_copy(&f, &resumed, &root, size as u64);
    let other = done(&other_rx, "the other fetch");
    check_copy(&f, &other, &root, size as u64);
}

#[test]
fn a_peer_serving_corrupt_pieces_is_banned_and_honest_nodes_finish() {
    let f = Fixture::new();
    let size = 2 * 1024 * 1024;
    let root = release(&f, size);
    let bad = BadPeer::start(&f.file("app.manifest"), Misbehaviour::Corrupt);
    // The origin starts only once both nodes have banned the bad peer, so each node is sure to
    // have asked it (with the origin up from the start, a node can finish before the bad peer's
    // connection is set up); the nodes redial the origin's address until it answers.
    let origin = free_addr();
    let fetches: Vec<_> = (0..2)
        .map(|i| {
            fetch(
                &f,
                "app.manifest",
                &format!("node{i}"),
                &[origin, bad.addr],
                &["--seed-secs", "60"],
            )
        })
        .collect();
    for (i, (_, addr, _)) in fetches.iter().enumerate() {
        wait_until_banned(*addr, &bad.peer_id, &format!("node{i}"));
    }
    let _origin = seed_at(&f, origin, "app.manifest", "payload.bin", &[]);
    for (i, (_, addr, rx)) in fetches.iter().enumerate() {
        let result = done(rx, &format!("node{i}"));
        check_copy(&f, &result, &root, size as u64);
        let s = status(*addr).unwrap();
        let r = &s["releases"][0];
        let banned = r["banned"].as_array().unwrap();
        assert_eq!(banned.len(), 1, "node{i}: {banned:?}");
        assert_eq!(banned[0]["peer_id"], bad.peer_id.as_str());
        // Detected at the first bad piece: nothing more was asked of it than its first requests.
        let corrupt = r["corrupt_pieces"].as_u64().unwrap();
        assert!(
            (1..=4).contains(&corrupt),
            "node{i}: {corrupt} corrupt pieces"
        );
        let out = run(f.path(), &["status", "--node", &addr.to_string()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("BANNED {}", bad.peer_id)), "{text}");
    }
}

/// Waits until the node at `addr` lists `peer_id` as banned from its first release.
fn wait_until_banned(addr: SocketAddr, peer_id: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let banned = status(addr).is_some_and(|s| {
            s["releases"][0]["banned"]
                .as_array()
                .is_some_and(|b| b.iter().any(|p| p["peer_id"] == peer_id))
        });
        if banned {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the bad peer is not banned after 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fetch from an honest origin plus one bad peer finishes with a correct payload.
/// Fetches a release from a peer that misbehaves as `how` and, once it has been asked for a
/// piece, from an honest origin; checks the copy, then waits until the fetch's release status
/// passes `ready` (named by `what`).
fn finishes_despite(how: Misbehaviour, what: &str, ready: impl Fn(&serde_json::Value) -> bool) {
    let f = Fixture::new();
    let size = 1024 * 1024 + 7;
    let root = release(&f, size);
    let bad = BadPeer::start(&f.file("app.manifest"), how);
    let origin = free_addr();
    let (_fetch, addr, rx) = fetch(
        &f,
        "app.manifest",
        "node",
        &[bad.addr, origin],
        &["--seed-secs", "120"],
    );
    // The origin starts once the bad peer has been asked for a piece, so the fetch meets the
    // misbehaviour whichever handshake would have ended first. A peer that sends an oversize
    // frame may be dropped before any request.
    if how != Misbehaviour::OversizeFrame {
        let deadline = Instant::now() + Duration::from_secs(60);
        while bad.requests() == 0 {
            assert!(
                Instant::now() < deadline,
                "the {how:?} peer was asked for nothing within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _origin = seed_at(&f, origin, "app.manifest", "payload.bin", &[]);
    let result = done(&rx, &format!("fetch beside a {how:?} peer"));
    check_copy(&f, &result, &root, size as u64);
    wait_for_release(addr, what, ready);
}

/// Waits until the first release in the status of the node at `addr` passes `ready`.
fn wait_for_release(addr: SocketAddr, what: &str, ready: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = status(addr)
            && ready(&s["releases"][0])
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within 60 s: {:?}",
            status(addr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_silent_peer_does_not_stall_a_fetch() {
    finishes_despite(Misbehaviour::Silent, "complete", |r| r["complete"] == true);
}

#[test]
fn a_peer_that_stops_mid_piece_does_not_stall_a_fetch() {
    finishes_despite(Misbehaviour::Short, "complete", |r| r["complete"] == true);
}

#[test]
fn a_peer_that_sends_too_much_is_banned() {
    finishes_despite(Misbehaviour::Long, "one peer banned", |r| {
        r["banned"].as_array().map(Vec::len) == Some(1)
    });
}

#[test]
fn a_peer_that_lies_in_its_have_bitfield_is_worked_around() {
    finishes_despite(Misbehaviour::LyingHave, "a false have counted", |r| {
        r["false_haves"].as_u64() >= Some(1)
    });
}

#[test]
fn a_peer_that_sends_an_oversize_frame_is_disconnected() {
    finishes_despite(Misbehaviour::OversizeFrame, "complete", |r| {
        r["complete"] == true
    });
}

/// A peer that sends the requested pieces at 100 bytes a second has its streams dropped once the
/// grace passes, instead of holding them for the 10,000 s a 1 MiB piece would take, and the fetch
/// then finishes from an honest peer.
///
/// The origin starts only after a trickling stream was dropped: were both up at once, a fetch on
/// a fast loopback could take every piece from the origin before the trickling peer's handshake
/// ends, and no stream would ever trickle.
#[test]
fn a_peer_trickling_pieces_has_its_streams_dropped() {
    let f = Fixture::new();
    let size = 1024 * 1024 + 7;
    let root = release(&f, size);
    let bad = BadPeer::start(&f.file("app.manifest"), Misbehaviour::Trickle);
    let origin = free_addr();
    let (_fetch, addr, rx) = fetch(
        &f,
        "app.manifest",
        "node",
        &[bad.addr, origin],
        &["--seed-secs", "120", "--stall-timeout-secs", "600"],
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = status(addr);
        let slow = now
            .as_ref()
            .map_or(0, |s| s["slow_piece_streams"].as_u64().unwrap());
        if slow >= 1 {
            break;
        }
        match rx.try_recv() {
            Ok(line) => panic!("the fetch ended before a trickling stream was dropped: {line}"),
            Err(mpsc::TryRecvError::Disconnected) => {
                panic!("the fetch exited without a result before a trickling stream was dropped")
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        assert!(
            Instant::now() < deadline,
            "no trickling piece stream was dropped within 90 s; the trickling peer was asked for \
             {} pieces; the fetch's status: {}",
            bad.requests(),
            now.map_or("none".to_owned(), |s| s.to_string())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The fetch redials the origin's address with its backoff and finishes from it.
    let _origin = seed_at(&f, origin, "app.manifest", "payload.bin", &[]);
    let result = done(&rx, "fetch beside a trickling peer");
    check_copy(&f, &result, &root, size as u64);
}

#[test]
fn unreachable_peers_give_a_clear_error_not_a_hang() {
    let f = Fixture::new();
    release(&f, 100_000);
    let dead = free_addr();
    let started = Instant::now();
    let out = run(
        f.path(),
        &[
            "fetch",
            "app.manifest",
            "--trust",
            "trust.json",
            "--data-dir",
            "node",
            "--listen",
            &free_addr().to_string(),
            "--peer",
            &dead.to_string(),
            "--connect-timeout-secs",
            "2",
        ],
    );
    assert_eq!(support::code(&out), 1);
    let err = support::stderr(&out);
    assert!(
        err.contains("could not reach any peer") && err.contains(&dead.to_string()),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_manifest_that_fails_the_trust_check_is_refused_before_anything_is_stored() {
    let f = Fixture::new();
    release(&f, 100_000);
    // A second trust document that does not name this publisher.
    support::ok(
        f.path(),
        &[
            "keys",
            "generate",
            "--role",
            "publisher",
            "--out",
            "other.key",
        ],
    );
    support::ok(
        f.path(),
        &[
            "trust",
            "init",
            "--root",
            "root.key",
            "--publisher",
            "other.key.pub",
            "--coordinator",
            "coordinator.key.pub",
            "--out",
            "other.json",
        ],
    );
    let out = run(
        f.path(),
        &[
            "fetch",
            "app.manifest",
            "--trust",
            "other.json",
            "--data-dir",
            "node",
            "--listen",
            &free_addr().to_string(),
            "--peer",
            "127.0.0.1:9",
            "--json",
        ],
    );
    assert_eq!(support::code(&out), 6, "{}", support::stderr(&out));
    assert_eq!(json(&out)["ok"], false);
    assert!(
        !f.path().join("node").exists(),
        "a refused fetch created its data directory"
    );
}

#[test]
fn a_full_disk_is_a_clear_error() {
    if support::skip_unless_root("a_full_disk_is_a_clear_error", "mounts a small tmpfs") {
        return;
    }
    let f = Fixture::new();
    release(&f, 4 * 1024 * 1024);
    let disk = support::Tmpfs::mount("1m", false);
    let out = run(
        f.path(),
        &[
            "fetch",
            "app.manifest",
            "--trust",
            "trust.json",
            "--data-dir",
            disk.path().to_str().unwrap(),
            "--listen",
            &free_addr().to_string(),
            "--peer",
            "127.0.0.1:9",
        ],
    );
    assert_eq!(support::code(&out), 1);
    let err = support::stderr(&out);
    assert!(err.contains("space"), "{err}");
}
