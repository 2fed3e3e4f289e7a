//! A rollout test fleet: a real coordinator and `shoal node` processes over three regions of
//! two fault domains, running a supervised service, with helpers to publish, roll out and read
//! back what nodes and the coordinator say. Included with `#[path]` beside `support/mesh.rs`.
//!
//! The service is a small shell script: it appends the time it started to `started-VERSION`
//! in its working directory, writes the version it runs to `version`, and sleeps. Its health
//! check passes when `version` holds the version being checked, so a release whose script
//! writes something else fails its check, like a bad build.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::harness::{self, Mesh, Proc, Work, loopback_listen, run_ok};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long a mesh of debug-build nodes has to form (joins, views, the first health reports).
pub const MESH_SETTLED_WITHIN: Duration = Duration::from_secs(90);
/// How long a published release has to be complete on every node: one piece, a broadcast of a
/// few hops and one fetch per node.
pub const RELEASE_EVERYWHERE_WITHIN: Duration = Duration::from_secs(90);
/// How long a whole rollout may take: census and assignment (a few health-report rounds of
/// about a second), then per wave one switch, two passing checks a second apart and a report
/// round, for up to 14 waves of debug-build processes on two cores.
pub const ROLLOUT_WITHIN: Duration = Duration::from_secs(300);
/// How long a failed canary has, once the conductor decided, to be back on the previous
/// release: one switch and two passing checks.
pub const BACK_WITHIN: Duration = Duration::from_secs(60);

pub const SERVICES: &str = r#"
[[service]]
name = "web"
mode = "supervise"
health = { command = ["sh", "-c", "test \"$(cat version)\" = \"$SHOAL_VERSION\""], grace_secs = 8, passes = 2, interval_secs = 0.5 }
"#;

/// The service script: notes when it started, then runs `body` (shell).
pub fn script(body: &str) -> String {
    format!("#!/bin/sh\ndate +%s%N >> \"started-$SHOAL_VERSION\"\n{body}\n")
}

/// The service script that puts `writes` in `version` and sleeps.
pub fn app(writes: &str) -> String {
    script(&format!("echo \"{writes}\" > version\nexec sleep 1000000"))
}

/// The plan the rollout tests run. The pilot is an exact count: nodes assign themselves to a
/// percentage stage by hash, so a 20% pilot of 28 nodes comes out empty about once in 400 runs,
/// and the tests check that every stage passed.
pub const PLAN: &str = r#"
one_region_at_a_time = true
fault_domain_by_fault_domain = true
max_parallel_fault_domains = 1

[[stage]]
name = "canary"
select = { region = "r1" }
size = "1"
success = "100%"
failure_threshold = "1"
deadline_secs = 120
on_failure = "rollback"

[[stage]]
name = "pilot"
size = "5"
deadline_secs = 120
on_failure = "rollback"

[[stage]]
name = "broad"
size = "100%"
deadline_secs = 120
on_failure = "rollback"
"#;

pub struct Fleet<'w> {
    pub work: &'w Work,
    pub mesh: Mesh<'w>,
    pub labels: Vec<String>,
}

/// A coordinator and `nodes` nodes over three regions of two fault domains each, running the
/// service; every node's labels are from `label(i)`.
pub fn fleet<'w>(work: &'w Work, nodes: usize, label: impl Fn(usize) -> String) -> Fleet<'w> {
    fleet_with(work, nodes, label, SERVICES)
}

/// Like [`fleet`], with `services` as the nodes' services file.
pub fn fleet_with<'w>(
    work: &'w Work,
    nodes: usize,
    label: impl Fn(usize) -> String,
    services: &str,
) -> Fleet<'w> {
    std::fs::write(work.file("services.toml"), services).unwrap();
    std::fs::write(work.file("plan.toml"), PLAN).unwrap();
    let mut mesh = Mesh::start(work, loopback_listen(), None);
    mesh.node_args = vec!["--services".into(), "services.toml".into()];
    let coordinator = mesh.coordinator.listen();
    let labels: Vec<String> = (0..nodes).map(&label).collect();
    for l in labels.iter().take(2) {
        mesh.add_node(loopback_listen(), None, &[coordinator], l);
    }
    mesh.wait_ready();
    let seeds = seeds(&mesh);
    for l in labels.iter().skip(2) {
        mesh.add_node(loopback_listen(), None, &seeds, l);
    }
    mesh.wait_ready();
    let count = nodes as u64;
    mesh.wait(
        "the coordinator counts every node",
        MESH_SETTLED_WITHIN,
        |m| {
            let fleet = m.coordinator.api.fleet()?;
            (fleet.nodes == count)
                .then_some(())
                .ok_or(format!("{} of {count}", fleet.nodes))
        },
    );
    Fleet { work, mesh, labels }
}

pub fn seeds(mesh: &Mesh) -> Vec<SocketAddr> {
    std::iter::once(mesh.coordinator.listen())
        .chain(mesh.nodes.iter().take(2).map(Proc::listen))
        .collect()
}

/// Three regions, two fault domains each.
pub fn cell_labels(i: usize) -> String {
    format!("region=r{},fd={}", 1 + i % 3, 1 + (i / 3) % 2)
}

impl Fleet<'_> {
    pub fn coordinator(&self) -> String {
        self.mesh.coordinator.listen().to_string()
    }

    pub fn shoal(&self, args: &[&str]) -> Value {
        let mut cmd = harness::shoal_command(None);
        cmd.current_dir(self.work.path()).args(args);
        let out = run_ok(cmd).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Publishes the script writing `writes` as `web@version` with `counter`; waits until
    /// every live node holds it.
    pub fn publish(&mut self, version: &str, counter: u64, writes: &str) -> String {
        self.publish_file(version, counter, &app(writes))
    }

    /// Publishes [`script`]`(body)` as `web@version` with `counter`; waits until every live
    /// node holds it. Returns its root.
    pub fn publish_script(&mut self, version: &str, counter: u64, body: &str) -> String {
        self.publish_file(version, counter, &script(body))
    }

    fn publish_file(&mut self, version: &str, counter: u64, contents: &str) -> String {
        let file = self.work.file(&format!("web-{version}"));
        std::fs::write(&file, contents).unwrap();
        self.mesh
            .publish(&file, "web", version, counter, RELEASE_EVERYWHERE_WITHIN)
    }

    /// `shoal rollout start` of `web@version` with `plan.toml`; returns the id.
    pub fn start(&self, version: &str) -> u64 {
        self.mesh.start_rollout("plan.toml", "web", version)
    }

    /// Waits until rollout `id` is in `state`, and returns its status.
    pub fn wait_state(&mut self, id: u64, state: &str) -> Value {
        self.mesh
            .wait(&format!("rollout {id} is {state}"), ROLLOUT_WITHIN, |m| {
                let status = m.rollout_status(id)?;
                match status["state"].as_str() {
                    Some(s) if s == state => Ok(status),
                    Some("running") | Some("paused") => Err(format!("{}", status["stages"])),
                    other => panic!("rollout {id} ended {other:?}, not {state}: {status}"),
                }
            })
    }

    pub fn audit(&self) -> Vec<Value> {
        let coordinator = self.coordinator();
        let audit = self.shoal(&["audit", "--coordinator", &coordinator, "--json"]);
        audit.as_array().unwrap().clone()
    }

    /// The service as node `i` reports it: (version, state).
    pub fn service(&self, i: usize) -> (String, String) {
        let status = self.shoal(&[
            "status",
            "--node",
            &self.mesh.nodes[i].listen().to_string(),
            "--json",
        ]);
        let web = &status["services"][0];
        assert_eq!(web["name"], "web", "node{i}: {status}");
        (
            web["version"].as_str().unwrap().to_owned(),
            web["state"].as_str().unwrap().to_owned(),
        )
    }

    pub fn work_dir(&self, i: usize) -> PathBuf {
        self.mesh.nodes[i].data_dir.join("services/web/work")
    }

    /// When node `i` started `version` (ns since the epoch), every time it did.
    pub fn starts(&self, i: usize, version: &str) -> Vec<u128> {
        std::fs::read_to_string(self.work_dir(i).join(format!("started-{version}")))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The version node `i`'s service process wrote last.
    pub fn running(&self, i: usize) -> String {
        std::fs::read_to_string(self.work_dir(i).join("version"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Rolls out 1.0 to every node and waits until it is done.
    pub fn first_release(&mut self) -> u64 {
        self.publish("1.0", 1, "1.0");
        let id = self.start("1.0");
        self.wait_state(id, "completed");
        id
    }
}

pub fn ns(time: &Value) -> u128 {
    u128::from(time["secs"].as_u64().unwrap()) * 1_000_000_000
        + u128::from(time["nanos"].as_u64().unwrap())
}

/// Audit events of rollout `id`, in order.
pub fn events(audit: &[Value], id: u64) -> Vec<String> {
    audit
        .iter()
        .filter(|e| e["rollout"] == id)
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}
