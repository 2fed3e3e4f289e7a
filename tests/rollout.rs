//! End-to-end rollouts on loopback: a real `shoal coordinator` and real `shoal node`
//! processes with a supervised service, releases published with `shoal publish`, rolled out
//! with `shoal rollout start`, read back with `shoal rollout status --json`, `shoal audit
//! --json` and `shoal status --node --json`.
//!
//! The fleet and its service are in `support/rollout_fleet.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/rollout_fleet.rs"]
mod rollout_fleet;

use harness::{Work, report, run_ok};
use rollout_fleet::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

/// Held by each test: every one starts a mesh, and two never share the cores.
static MESH: Mutex<()> = Mutex::new(());

#[test]
fn a_good_release_goes_canary_pilot_broad_one_region_and_fault_domain_at_a_time() {
    let _turn = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let work = Work::new("rollout-good");
    // Node 28 is in maintenance, node 29 is drained: neither may ever activate.
    let mut f = fleet(&work, 30, |i| match i {
        28 => format!("{},maintenance=true", cell_labels(i)),
        _ => cell_labels(i),
    });
    let drained = f.mesh.nodes[29].listen().to_string();
    let mut cmd = harness::shoal_command(None);
    cmd.args(["node", "drain", "--node", &drained]);
    run_ok(cmd).unwrap();

    f.publish("1.0", 1, "1.0");
    let id = f.start("1.0");
    let status = f.wait_state(id, "completed");

    // Every stage passed, and the counts add up to the fleet less the two skipped nodes.
    let stages = status["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["canary", "pilot", "broad"]);
    assert_eq!(stages[0]["expected"], 1, "the canary is one node");
    let healthy: u64 = stages.iter().map(|s| s["healthy"].as_u64().unwrap()).sum();
    assert_eq!(healthy, 28, "{status}");
    for s in stages {
        assert_eq!(s["state"], "passed", "{s}");
        assert_eq!(s["failed"], 0, "{s}");
    }

    // Every node runs 1.0, by its own account and its service's; the skipped two run nothing.
    for i in 0..28 {
        assert_eq!(f.service(i), ("1.0".into(), "healthy".into()), "node{i}");
        assert_eq!(f.running(i), "1.0", "node{i}'s process");
    }
    for i in [28, 29] {
        assert!(f.starts(i, "1.0").is_empty(), "node{i} must not activate");
        assert_eq!(f.service(i).0, "", "node{i} runs nothing");
    }

    // Waves: each within one region and one fault domain; one at a time; every node started
    // inside the time its own wave was open.
    let waves = status["waves"].as_array().unwrap();
    let mut last_passed = 0u128;
    for w in waves {
        let cells = w["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 1, "one fault domain per wave: {w}");
        let opened = ns(&w["opened_at"]);
        let passed = ns(&w["passed_at"]);
        assert!(
            opened >= last_passed,
            "a wave opened before the last one passed"
        );
        last_passed = passed;
    }
    for i in 0..28 {
        let labels = &f.labels[i];
        let start = f.starts(i, "1.0");
        assert_eq!(start.len(), 1, "node{i} started 1.0 once");
        let inside = waves.iter().any(|w| {
            let c = &w["cells"][0];
            labels.contains(&format!("region={}", c["region"].as_str().unwrap()))
                && labels.contains(&format!("fd={}", c["fault_domain"].as_str().unwrap()))
                && ns(&w["opened_at"]) <= start[0]
                && start[0] <= ns(&w["passed_at"])
        });
        assert!(inside, "node{i} ({labels}) started outside its wave");
    }

    // The audit log tells the same story: census, assignment, then each wave opened and passed
    // once, in order.
    let log = events(&f.audit(), id);
    assert!(log[0].contains("census"), "{log:?}");
    let opened: Vec<&String> = log.iter().filter(|e| e.contains("opened")).collect();
    let passed: Vec<&String> = log.iter().filter(|e| e.contains("passed:")).collect();
    assert_eq!(opened.len(), waves.len(), "{log:?}");
    assert_eq!(passed.len(), waves.len(), "{log:?}");
    assert!(log.last().unwrap().contains("completed"), "{log:?}");
    report(&format!("[rollout-good] {} waves: {log:#?}", waves.len()));
}

#[test]
fn a_release_that_fails_its_health_check_stops_at_the_canary_and_rolls_back() {
    let _turn = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let work = Work::new("rollout-bad");
    let mut f = fleet(&work, 12, cell_labels);
    f.first_release();
    f.publish("2.0", 2, "broken");
    let id = f.start("2.0");
    let status = f.wait_state(id, "rolled_back");
    assert_eq!(status["stages"][0]["state"], "failed", "{status}");
    assert_eq!(status["stages"][0]["failed"], 1, "{status}");
    let reason = status["reasons"][0][0].as_str().unwrap_or_default();
    assert!(reason.contains("not healthy"), "{status}");

    // Only the canary ever started 2.0; it and everyone else run 1.0, healthy.
    let started: Vec<usize> = (0..12)
        .filter(|&i| !f.starts(i, "2.0").is_empty())
        .collect();
    assert_eq!(
        started.len(),
        1,
        "only the canary activated 2.0: {started:?}"
    );
    let canary = started[0];
    assert!(
        f.labels[canary].contains("region=r1"),
        "the canary is in r1"
    );
    let addr = f.mesh.nodes[canary].listen().to_string();
    let dir = work.path().to_owned();
    f.mesh.wait("the canary is back on 1.0", BACK_WITHIN, |_| {
        let mut cmd = harness::shoal_command(None);
        cmd.current_dir(&dir)
            .args(["status", "--node", &addr, "--json"]);
        let out = run_ok(cmd)?;
        let s: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let web = &s["services"][0];
        (web["version"] == "1.0" && web["target"].is_null())
            .then_some(())
            .ok_or(format!("{web}"))
    });
    for i in 0..12 {
        assert_eq!(f.running(i), "1.0", "node{i}'s process");
        let (version, state) = f.service(i);
        assert_eq!(version, "1.0", "node{i}");
        let expected = if i == canary { "failed" } else { "healthy" };
        assert_eq!(state, expected, "node{i}");
    }
    // The canary runs 1.0 again: started once for 1.0 at the first rollout, once on the way back.
    assert_eq!(f.starts(canary, "1.0").len(), 2);
}

#[test]
fn a_coordinator_killed_mid_rollout_resumes_without_skipping_or_repeating_a_wave() {
    let _turn = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let work = Work::new("rollout-restart");
    let mut f = fleet(&work, 12, cell_labels);
    // A slow plan: every wave bakes 3 s, so the coordinator dies with waves still to go.
    let slow = PLAN.replace("deadline_secs = 120", "bake_secs = 3\ndeadline_secs = 120");
    std::fs::write(work.file("plan.toml"), slow).unwrap();
    f.publish("1.0", 1, "1.0");
    let id = f.start("1.0");
    f.mesh.wait("the third wave is open", ROLLOUT_WITHIN, |m| {
        let s = m.rollout_status(id)?;
        (s["wave"].as_u64().unwrap_or(0) >= 2)
            .then_some(())
            .ok_or(format!("wave {}", s["wave"]))
    });
    f.mesh.coordinator.kill();
    f.mesh.restart_coordinator();
    let status = f.wait_state(id, "completed");
    let waves = status["waves"].as_array().unwrap().len();
    let log = events(&f.audit(), id);
    for n in 1..=waves {
        let opened = log
            .iter()
            .filter(|e| e.starts_with(&format!("wave {n} opened")))
            .count();
        let passed = log
            .iter()
            .filter(|e| e.starts_with(&format!("wave {n} passed")))
            .count();
        assert_eq!((opened, passed), (1, 1), "wave {n}: {log:#?}");
    }
    assert!(
        log.iter().any(|e| e.contains("coordinator restarted")),
        "{log:#?}"
    );
    for i in 0..12 {
        assert_eq!(f.running(i), "1.0", "node{i}");
    }
}

#[test]
fn a_node_killed_mid_activation_comes_back_healthy_on_one_release() {
    let _turn = MESH.lock().unwrap_or_else(|e| e.into_inner());
    let work = Work::new("rollout-node-kill");
    let mut f = fleet(&work, 6, cell_labels);
    f.first_release();
    // 2.0 takes 5 s to become healthy (the grace period is 8 s), so the node can be killed
    // while it activates.
    let file = work.file("web-2.0");
    std::fs::write(
        &file,
        "#!/bin/sh\ndate +%s%N >> \"started-$SHOAL_VERSION\"\nsleep 5\necho \"$SHOAL_VERSION\" > version\nexec sleep 1000000\n",
    )
    .unwrap();
    f.mesh
        .publish(&file, "web", "2.0", 2, RELEASE_EVERYWHERE_WITHIN);
    let id = f.start("2.0");
    // The canary is the first node to start 2.0; kill it while it says it is activating.
    let work_dirs: Vec<PathBuf> = (0..6).map(|i| f.work_dir(i)).collect();
    let addrs: Vec<String> = (0..6)
        .map(|i| f.mesh.nodes[i].listen().to_string())
        .collect();
    let victim = f
        .mesh
        .wait("a node is activating 2.0", ROLLOUT_WITHIN, |_| {
            let i = work_dirs
                .iter()
                .position(|d| d.join("started-2.0").exists())
                .ok_or("nobody yet".to_owned())?;
            let mut cmd = harness::shoal_command(None);
            cmd.args(["status", "--node", &addrs[i], "--json"]);
            let s: Value =
                serde_json::from_slice(&run_ok(cmd)?.stdout).map_err(|e| e.to_string())?;
            let web = &s["services"][0];
            (web["state"] == "activating" && web["target"] == "2.0")
                .then_some(i)
                .ok_or(format!("node{i}: {web}"))
        });
    f.mesh.nodes[victim].kill();
    let seeds = seeds(&f.mesh);
    let labels = f.labels[victim].clone();
    let seeds: Vec<SocketAddr> = seeds
        .into_iter()
        .filter(|s| *s != f.mesh.nodes[victim].listen())
        .collect();
    f.mesh.restart_node(victim, &seeds, &labels);
    let status = f.wait_state(id, "completed");
    assert_eq!(status["stages"][0]["healthy"], 1, "{status}");
    let total: u64 = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["healthy"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 6, "every node counted once, healthy: {status}");
    assert_eq!(f.service(victim), ("2.0".into(), "healthy".into()));
    assert_eq!(f.running(victim), "2.0");
    let versions: BTreeSet<String> = (0..6).map(|i| f.running(i)).collect();
    assert_eq!(versions, BTreeSet::from(["2.0".to_owned()]));
}
