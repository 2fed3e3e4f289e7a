//! Activations that cannot succeed, on a real node: a health URL that refuses connections, and
//! a disk too full to stage the release. Each ends with the canary `FAILED` for a reason the
//! node's status names, the rollout rolled back, and the service still running, and healthy on,
//! the release it ran before; never a half-switched service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/rollout_fleet.rs"]
mod rollout_fleet;

use harness::{Work, loopback_listen, report, run_ok};
use rollout_fleet::*;
use serde_json::Value;
use std::net::SocketAddr;

/// One stage: the first node, rolled back if it fails.
const CANARY_PLAN: &str = r#"
[[stage]]
name = "canary"
size = "1"
success = "strict"
failure_threshold = "1"
deadline_secs = 120
on_failure = "rollback"
"#;

/// Rolls `version` out with [`CANARY_PLAN`] and waits until it is rolled back.
fn roll_out_and_see_it_rolled_back(f: &mut Fleet<'_>, version: &str) {
    std::fs::write(f.work.file("canary.toml"), CANARY_PLAN).unwrap();
    let id = f.mesh.start_rollout("canary.toml", "web", version);
    f.wait_state(id, "rolled_back");
}

/// The node's service entry, as `shoal status --node --json` prints it.
fn service_entry(work: &Work, node: SocketAddr) -> Result<Value, String> {
    let mut cmd = harness::shoal_command(None);
    cmd.current_dir(work.path())
        .args(["status", "--node", &node.to_string(), "--json"]);
    let out = run_ok(cmd)?;
    let status: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(status["services"][0].clone())
}

/// The release the service's `current` link names (its root).
fn current_link(f: &Fleet<'_>) -> String {
    let link = f.mesh.nodes[0].data_dir.join("services/web/current");
    std::fs::read_link(&link)
        .unwrap_or_else(|e| panic!("{}: {e}", link.display()))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_health_url_that_refuses_connections_fails_the_canary_with_the_reason() {
    let port = loopback_listen().port();
    // The service answers its health URL itself (Python's http.server, from scripts/setup); the
    // bad build never starts its server, so every check finds the port closed.
    let services = format!(
        r#"
[[service]]
name = "web"
mode = "supervise"
health = {{ http = "http://127.0.0.1:{port}/health", grace_secs = 8, passes = 2, interval_secs = 0.5 }}
"#
    );
    let serve = format!(
        "mkdir -p www && echo ok > www/health\nexec python3 -m http.server {port} --bind 127.0.0.1 --directory www"
    );
    let work = Work::new("health-refused");
    let mut f = fleet_with(&work, 1, cell_labels, &services);
    let good = f.publish_script("1.0", 1, &serve);
    let id = f.mesh.start_rollout("plan.toml", "web", "1.0");
    f.wait_state(id, "completed");
    f.publish_script("2.0", 2, "exec sleep 1000000");
    roll_out_and_see_it_rolled_back(&mut f, "2.0");

    let node = f.mesh.nodes[0].listen();
    let web = service_entry(&work, node).unwrap();
    let reason = web["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains(&format!("127.0.0.1:{port}")) && reason.contains("refused"),
        "the reason names the URL and the refusal: {web}"
    );
    f.mesh
        .wait("the service is healthy on 1.0 again", BACK_WITHIN, |_| {
            let web = service_entry(&work, node)?;
            (web["version"] == "1.0" && web["state"] != "activating")
                .then_some(())
                .ok_or(format!("{web}"))
        });
    assert_eq!(current_link(&f), good, "current names 1.0 again");
    assert_eq!(
        f.starts(0, "2.0").len(),
        1,
        "2.0 started once, then was stopped"
    );
    report(&format!("[health-refused] {reason}"));
}

#[test]
fn a_disk_too_full_to_stage_fails_the_canary_and_switches_nothing() {
    if harness::common::skip_unless_root(
        "a_disk_too_full_to_stage_fails_the_canary_and_switches_nothing",
        "mount a small tmpfs as the node's data directory",
    ) {
        return;
    }
    let work = Work::new("disk-full");
    // The node's data directory holds 6 MiB: room for the 1.0 script twice (store and staged),
    // the 4 MiB 2.0 in the store, but not a second copy of it to stage.
    let data_dir = work.file("node00");
    std::fs::create_dir_all(&data_dir).unwrap();
    let _disk = harness::common::Tmpfs::mount_over(&data_dir, "6m");
    let mut f = fleet(&work, 1, cell_labels);
    let good = f.publish_script("1.0", 1, "echo 1.0 > version\nexec sleep 1000000");
    let id = f.mesh.start_rollout("plan.toml", "web", "1.0");
    f.wait_state(id, "completed");
    let padding = "# padding\n".repeat((4 << 20) / 10);
    f.publish_script(
        "2.0",
        2,
        &format!("echo 2.0 > version\nexec sleep 1000000\n{padding}"),
    );
    roll_out_and_see_it_rolled_back(&mut f, "2.0");

    let node = f.mesh.nodes[0].listen();
    let web = service_entry(&work, node).unwrap();
    let reason = web["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("staging failed") && reason.contains("No space left"),
        "the reason says the disk is full: {web}"
    );
    assert_eq!(web["version"], "1.0", "{web}");
    assert_eq!(current_link(&f), good, "current never left 1.0");
    assert_eq!(f.running(0), "1.0");
    assert_eq!(f.starts(0, "1.0").len(), 1, "1.0 was never stopped");
    assert!(f.starts(0, "2.0").is_empty(), "2.0 never started");
    report(&format!("[disk-full] {reason}"));
}
