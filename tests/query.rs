//! Fleet queries on real processes: a coordinator and six nodes over three regions of two
//! fault domains, asked with `shoal query` which of them carry labels, do not run a version, or
//! have the service in a state; before and after a rollout of `web 1.0`. The answers come up
//! the broadcast tree; the coordinator lists no machine. Bad selectors, states and limits are
//! refused by the CLI and by the API, naming what is wrong.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/http.rs"]
mod http;
#[path = "support/rollout_fleet.rs"]
mod rollout_fleet;

use harness::{Work, report, run_with_timeout};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

const NODES: usize = 6;

fn query(fleet: &rollout_fleet::Fleet, args: &[&str]) -> Value {
    let coordinator = fleet.coordinator();
    let mut all = vec!["query", "--coordinator", &coordinator, "--json"];
    all.extend_from_slice(args);
    let answer = fleet.shoal(&all);
    report(&format!(
        "shoal query {}: {} of {} answered match, {} ms",
        args.join(" "),
        answer["matched"],
        answer["answered"],
        answer["waited_ms"]
    ));
    answer
}

fn matched(answer: &Value) -> u64 {
    answer["matched"].as_u64().unwrap()
}

#[test]
fn the_fleet_answers_queries_by_label_version_and_state_up_the_tree() {
    let work = Work::new("query");
    let mut fleet = rollout_fleet::fleet(&work, NODES, rollout_fleet::cell_labels);
    let peers: BTreeSet<String> = fleet
        .mesh
        .nodes
        .iter()
        .map(|n| n.peer_id().to_owned())
        .collect();

    // Every node answers, and the sample names each with its address and labels.
    let all = query(&fleet, &["--limit", "50"]);
    assert_eq!(matched(&all), NODES as u64, "{all}");
    assert_eq!(all["answered"], NODES as u64);
    assert_eq!(all["complete"], true);
    let sampled: BTreeSet<String> = all["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["peer_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sampled, peers);
    for node in all["sample"].as_array().unwrap() {
        let addr: SocketAddr = node["addr"].as_str().unwrap().parse().unwrap();
        let proc = fleet
            .mesh
            .nodes
            .iter()
            .find(|p| p.peer_id() == node["peer_id"])
            .unwrap();
        assert_eq!(addr, proc.listen());
        assert!(node["labels"]["region"].is_string(), "{node}");
    }

    // A selector, a limit, a version no node runs, the state every node's service is in.
    let r1 = query(&fleet, &["--select", "region=r1"]);
    assert_eq!(matched(&r1), 2, "{r1}");
    assert!(
        r1["sample"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["labels"]["region"] == "r1")
    );
    let one = query(&fleet, &["--limit", "1"]);
    assert_eq!(
        (matched(&one), one["sample"].as_array().unwrap().len()),
        (NODES as u64, 1)
    );
    assert_eq!(
        matched(&query(&fleet, &["--version-not", "web@1.0"])),
        NODES as u64
    );
    assert_eq!(matched(&query(&fleet, &["--state", "idle"])), NODES as u64);
    assert_eq!(matched(&query(&fleet, &["--state", "healthy"])), 0);

    // After a rollout of web 1.0 to every node.
    fleet.publish("1.0", 1, "1.0");
    let id = fleet.start("1.0");
    fleet.wait_state(id, "completed");
    assert_eq!(matched(&query(&fleet, &["--version-not", "web@1.0"])), 0);
    assert_eq!(
        matched(&query(&fleet, &["--version-not", "2.0"])),
        NODES as u64
    );
    let healthy = query(
        &fleet,
        &["--state", "healthy", "--select", "region=r2,fd=1"],
    );
    assert_eq!(matched(&healthy), 1, "{healthy}");
    let web = &healthy["sample"][0]["services"][0];
    assert_eq!(
        (
            web["service"].as_str(),
            web["version"].as_str(),
            web["state"].as_str()
        ),
        (Some("web"), Some("1.0"), Some("healthy"))
    );

    // The text form.
    let coordinator = fleet.coordinator();
    let mut cmd = harness::shoal_command(None);
    cmd.current_dir(work.path()).args([
        "query",
        "--coordinator",
        &coordinator,
        "--select",
        "region=r3",
    ]);
    let out = harness::run_ok(cmd).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("2 machines match, of 6 that answered"),
        "{text}"
    );

    // Bad input, at the CLI and at the API.
    for (args, says) in [
        (vec!["--select", "region"], "--select"),
        (vec!["--limit", "51"], "--limit"),
        (vec!["--state", "running"], "unknown state \"running\""),
        (vec!["--version-not", "web@"], "SERVICE@VERSION"),
    ] {
        let mut cmd = harness::shoal_command(None);
        cmd.current_dir(work.path())
            .args(["query", "--coordinator", &coordinator])
            .args(&args);
        let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let addr = fleet.mesh.coordinator.listen();
    for (query, says) in [
        ("limit=500", "past the maximum of 50"),
        ("select=region", "select:"),
        ("state=running", "state:"),
        ("wait_secs=99", "wait_secs 99"),
        ("colour=red", "unknown field"),
    ] {
        let answer = http::signed(
            &http::operator(),
            addr,
            "GET",
            &format!("/v1/query?{query}"),
            "",
        );
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert!(answer.body.contains(says), "{query}: {}", answer.body);
    }
}
