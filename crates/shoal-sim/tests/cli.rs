//! `shoal-sim run` as a user runs it: the built binary, scenario files on disk.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
        .args(args)
        .env_remove("SEED")
        .output()
        .unwrap()
}

fn scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const SMALL: &str = r#"
seed = 3
[fleet]
nodes = 8
upload = "100mbit"
download = "100mbit"
[release]
size = "16MiB"
piece_size = "256KiB"
"#;

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "shoal-sim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_run_writes_its_summary_and_plot_with_the_named_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "small.toml", SMALL);
    let out_dir = dir.path().join("out");
    let out = sim(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    let printed = json_of(&out);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    for key in [
        "nodes",
        "simulated_secs",
        "wall_secs",
        "events",
        "peak_rss_bytes",
        "kumar_ross_secs",
        "last_complete_secs",
        "origin_bytes",
    ] {
        assert!(printed.get(key).is_some(), "--json lacks {key}: {printed}");
        assert!(written.get(key).is_some(), "summary.json lacks {key}");
    }
    assert_eq!(printed["nodes"], 8);
    assert_eq!(printed["complete_nodes"], 8);
    let bound = printed["kumar_ross_secs"].as_f64().unwrap();
    let last = printed["last_complete_secs"].as_f64().unwrap();
    // 16 MiB at 12.5 MB/s: the origin alone needs 1.34 s to send one copy.
    assert!(
        (bound - 16.0 * 1048576.0 / 12.5e6).abs() < 1e-6,
        "bound {bound}"
    );
    assert!(
        last >= bound,
        "finished at {last} s, before the bound {bound} s"
    );
    assert!(printed["origin_bytes"].as_u64().unwrap() >= 16 << 20);
    let svg = std::fs::read_to_string(out_dir.join("completion.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("simulated seconds"));
    let csv = std::fs::read_to_string(out_dir.join("completion.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 7,
        "a header and one line per receiver"
    );
}

#[test]
fn the_same_seed_replays_the_same_run_and_another_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "small.toml", SMALL);
    let run = |seed: &str| {
        let v = json_of(&sim(&[
            "run",
            file.to_str().unwrap(),
            "--json",
            "--seed",
            seed,
        ]));
        (
            v["events"].as_u64().unwrap(),
            v["last_complete_secs"].as_f64().unwrap(),
            v["origin_bytes"].as_u64().unwrap(),
        )
    };
    assert_eq!(run("5"), run("5"));
    // SEED= does what --seed does.
    let by_env = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
        .args(["run", file.to_str().unwrap(), "--json"])
        .env("SEED", "5")
        .output()
        .unwrap();
    let v = json_of(&by_env);
    assert_eq!(v["events"].as_u64().unwrap(), run("5").0);
    assert_eq!(v["seed"], 5);
    assert_ne!(run("5"), run("6"), "two seeds gave the same run");
}

#[test]
fn bad_scenarios_fail_with_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.toml",
            SMALL.replace("nodes = 8", "nodes = 8\ncolour = 1"),
            "colour",
        ),
        (
            "zero.toml",
            SMALL.replace("nodes = 8", "nodes = 0"),
            "fleet.nodes is 0",
        ),
        (
            "rate.toml",
            SMALL.replace("\"100mbit\"\ndownload", "\"quick\"\ndownload"),
            "fleet.upload",
        ),
        (
            "region.toml",
            format!("{SMALL}[[fault]]\nat_secs = 1\nkind = \"crash\"\nregion = 4\n"),
            "fault[0].region is 4",
        ),
    ];
    for (name, text, want) in cases {
        let file = scenario(dir.path(), name, &text);
        let out = sim(&["run", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} ran");
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let missing = sim(&["run", dir.path().join("absent.toml").to_str().unwrap()]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("absent.toml: cannot read it"));
}

#[test]
fn a_fleet_too_big_for_memory_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    // 10 million nodes of 4096 pieces: far beyond this machine.
    let text = SMALL.replace("16MiB", "1GiB");
    let file = scenario(dir.path(), "huge.toml", &text);
    let out = sim(&["run", file.to_str().unwrap(), "--nodes", "10000000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("available") && err.contains("lower --nodes"),
        "{err}"
    );
}

#[test]
fn the_committed_scenarios_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../simulations");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            shoal_sim::scenario::Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "no scenarios in {}", dir.display());
}

#[test]
fn a_region_that_crashes_midway_leaves_the_rest_complete() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
seed = 2
[fleet]
nodes = 60
regions = 3
fault_domains = 2
upload = "100mbit"
download = "100mbit"
[release]
size = "32MiB"
piece_size = "1MiB"
[[fault]]
at_secs = 1.5
kind = "crash"
region = 2
"#;
    let file = scenario(dir.path(), "crash.toml", text);
    let v = json_of(&sim(&["run", file.to_str().unwrap(), "--json"]));
    // Nodes are spread over regions by rack: region 2 holds a third of them.
    assert_eq!(v["crashed_nodes"], 20, "{v}");
    assert_eq!(v["complete_nodes"], 40, "{v}");
    let last = v["last_complete_secs"].as_f64().unwrap();
    assert!(last > 1.5, "the survivors finished after the crash: {v}");
}

/// 60 nodes in three regions; the origin is in region 1. 32 MiB at 100 Mbit/s takes a few
/// seconds without a fault.
const THREE_REGIONS: &str = r#"
seed = 4
limit_secs = 300
[fleet]
nodes = 60
regions = 3
fault_domains = 2
upload = "100mbit"
download = "100mbit"
[release]
size = "32MiB"
piece_size = "1MiB"
"#;

fn partitioned(dir: &Path, fault: &str) -> Output {
    let file = scenario(
        dir,
        "partition.toml",
        &format!("{THREE_REGIONS}[[fault]]\nkind = \"partition\"\nregion = 3\n{fault}"),
    );
    sim(&["run", file.to_str().unwrap(), "--json"])
}

#[test]
fn a_partitioned_region_completes_only_once_it_heals() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "plain.toml", THREE_REGIONS);
    let plain = json_of(&sim(&["run", file.to_str().unwrap(), "--json"]));
    let plain_last = plain["last_complete_secs"].as_f64().unwrap();
    // Longer than the links' 20 s timeout: they break, regions 1 and 2 finish without region 3,
    // and region 3 connects again after the heal. Shorter: the links hold, and what stalled on
    // them resumes at the heal.
    for (length, heal) in [(40.0, 40.5), (10.0, 10.5)] {
        assert!(plain_last < heal, "without the partition: {plain}");
        let v = json_of(&partitioned(
            dir.path(),
            &format!("at_secs = 0.5\nduration_secs = {length}\n"),
        ));
        assert_eq!(v["complete_nodes"], 60, "{v}");
        assert_eq!(v["partitioned_nodes"], 0, "{v}");
        let last = v["last_complete_secs"].as_f64().unwrap();
        assert!(
            last > heal && last < heal + 30.0,
            "region 3 completes soon after the heal at {heal} s: {v}"
        );
        if length > 20.0 {
            let median = v["p50_complete_secs"].as_f64().unwrap();
            assert!(median < heal, "regions 1 and 2 complete meanwhile: {v}");
        }
    }
}

#[test]
fn a_partition_that_never_heals_is_reported_with_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let out = partitioned(dir.path(), "at_secs = 0.5\n");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partitioned_nodes"], 20, "{v}");
    assert_eq!(v["complete_nodes"], 40, "{v}");
    assert_eq!(v["last_complete_secs"], Value::Null, "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only 40 of 60 nodes completed") && err.contains("20 behind a partition"),
        "{err}"
    );
}

/// The committed 300-node rollout scenario with a partition of region 2 from `at` seconds
/// (lasting as `length` says), run at 90 nodes.
fn rollout_partitioned(dir: &Path, at: u32, length: &str) -> Value {
    let text = std::fs::read_to_string(committed("rollout-300.toml"))
        .unwrap()
        .replace(
            "plans/canary-pilot-broad.toml",
            committed("plans/canary-pilot-broad.toml").to_str().unwrap(),
        );
    let file = scenario(
        dir,
        "rollout-partition.toml",
        &format!("{text}\n[[fault]]\nat_secs = {at}\nkind = \"partition\"\nregion = 2\n{length}"),
    );
    run_at_90(&file)
}

#[test]
fn a_partitioned_region_holds_its_waves_until_it_heals_or_fails_them() {
    let dir = tempfile::tempdir().unwrap();
    // From 60 s, in the pilot stage, until 120 s.
    let healed = rollout_partitioned(dir.path(), 60, "duration_secs = 60\n");
    assert_eq!(healed["rollout_state"], "completed", "{healed}");
    assert_eq!(healed["activated_nodes"], 89, "{healed}");
    let opened_in_r2 = healed["waves"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["region"] == "r2")
        .map(|w| w["started_secs"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(
        opened_in_r2 < 120.0,
        "r2's wave opens during the cut: {healed}"
    );
    for w in healed["waves"].as_array().unwrap() {
        if w["region"] == "r2" {
            let passed = w["healthy_secs"].as_f64().unwrap();
            assert!(
                passed > 120.0,
                "a wave in r2 passed before the heal: {healed}"
            );
        }
    }
    let cut = rollout_partitioned(dir.path(), 60, "");
    assert_eq!(cut["rollout_state"], "rolled_back", "{cut}");
    assert_eq!(cut["partitioned_nodes"], 32, "{cut}");
    let reason = cut["reason"].as_str().unwrap();
    assert!(reason.contains("missed its deadline"), "{cut}");
    let waves = cut["waves"].as_array().unwrap();
    let failed = waves
        .iter()
        .position(|w| w["healthy_secs"].is_null())
        .unwrap();
    assert_eq!(waves[failed]["region"], "r2", "{cut}");
    assert!(
        waves[failed + 1..]
            .iter()
            .all(|w| w["started_secs"].is_null()),
        "no wave opened after the one that failed: {cut}"
    );
}

fn committed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../simulations")
        .join(name)
}

/// Runs a committed rollout scenario at 90 nodes (three regions of two fault domains, as
/// committed).
fn rollout_run(name: &str) -> Value {
    run_at_90(&committed(name))
}

#[test]
fn a_region_cut_off_during_the_census_holds_it_until_it_heals_or_the_census_times_out() {
    let dir = tempfile::tempdir().unwrap();
    // The rollout starts at 30 s; the census is still waiting for a steady count at 35 s.
    let cut = rollout_partitioned(dir.path(), 35, "");
    assert_eq!(cut["rollout_state"], "aborted", "{cut}");
    assert_eq!(cut["activated_nodes"], 0, "{cut}");
    let reason = cut["reason"].as_str().unwrap();
    assert!(
        reason.contains("census did not settle")
            && reason.contains("nothing was heard since from fault domains that reported nodes")
            && reason.contains("r2/"),
        "the census names the region it lost: {cut}"
    );
    // Healed after 20 s: the census counts region 2 and its waves come in stage order.
    let healed = rollout_partitioned(dir.path(), 35, "duration_secs = 20\n");
    assert_eq!(healed["rollout_state"], "completed", "{healed}");
    assert_eq!(healed["activated_nodes"], 89, "{healed}");
    let waves = healed["waves"].as_array().unwrap();
    let first_broad = waves.iter().position(|w| w["stage"] == "broad").unwrap();
    assert!(
        waves[..first_broad].iter().any(|w| w["region"] == "r2"),
        "region 2 has pilot waves before the broad stage: {healed}"
    );
}

fn run_at_90(file: &Path) -> Value {
    json_of(&sim(&[
        "run",
        file.to_str().unwrap(),
        "--nodes",
        "90",
        "--json",
    ]))
}

#[test]
fn a_rollout_goes_wave_by_wave_once_the_nodes_hold_the_release() {
    let v = rollout_run("rollout-300.toml");
    assert_eq!(v["rollout_state"], "completed", "{v}");
    assert_eq!(v["complete_nodes"], 90, "{v}");
    assert_eq!(
        v["activated_nodes"], 89,
        "every node but the coordinator's host: {v}"
    );
    let waves = v["waves"].as_array().unwrap();
    let stages: Vec<&str> = waves.iter().map(|w| w["stage"].as_str().unwrap()).collect();
    assert_eq!(stages[0], "canary", "{v}");
    assert_eq!(waves[0]["nodes"], 1, "{v}");
    assert!(
        stages.contains(&"pilot") && stages.last() == Some(&"broad"),
        "{v}"
    );
    let nodes: u64 = waves.iter().map(|w| w["nodes"].as_u64().unwrap()).sum();
    assert_eq!(nodes, 89, "the waves cover the fleet once: {v}");
    let start = 30.0;
    let mut previous = 0.0;
    for w in waves {
        let opened = w["started_secs"].as_f64().unwrap();
        let healthy = w["healthy_secs"].as_f64().unwrap();
        assert!(
            opened >= start && opened >= previous && healthy > opened,
            "{w}"
        );
        assert_eq!(w["failed"], 0, "{w}");
        previous = healthy;
    }
    // One region at a time: within a stage, each region's waves come together.
    for stage in ["pilot", "broad"] {
        let mut regions: Vec<&str> = waves
            .iter()
            .filter(|w| w["stage"] == stage)
            .map(|w| w["region"].as_str().unwrap())
            .collect();
        let runs = 1 + regions.windows(2).filter(|p| p[0] != p[1]).count();
        regions.sort_unstable();
        regions.dedup();
        assert_eq!(runs, regions.len(), "{stage} interleaves regions: {v}");
    }
}

#[test]
fn a_rollout_run_writes_its_timeline_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let file = committed("rollout-300.toml");
    let out = dir.path().join("out");
    let v = json_of(&sim(&[
        "run",
        file.to_str().unwrap(),
        "--nodes",
        "90",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(v["rollout_state"], "completed", "{v}");
    let csv = std::fs::read_to_string(out.join("timeline.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    let waves = v["waves"].as_array().unwrap();
    assert_eq!(rows[0].len(), 9 + waves.len(), "a column per wave: {csv}");
    for pair in rows.windows(2) {
        assert!(pair[1][0] > pair[0][0], "time goes forward");
        assert!(pair[1][1] >= pair[0][1], "nodes holding it never fall");
        assert!(pair[1][2] >= pair[0][2], "origin bytes never fall");
    }
    let last = rows.last().unwrap();
    assert_eq!(last[1], 90.0, "every node holds the release: {csv}");
    assert_eq!(last[2], v["origin_bytes"].as_f64().unwrap());
    assert_eq!(last[3], v["coordinator_messages"].as_f64().unwrap());
    assert_eq!(last[6], 89.0, "every rollout node healthy at the end");
    for (i, w) in waves.iter().enumerate() {
        assert_eq!(last[9 + i], w["nodes"].as_f64().unwrap(), "wave {i}: {w}");
        // Nobody in a wave is healthy before it opens.
        let opened = w["started_secs"].as_f64().unwrap();
        let early = rows.iter().find(|r| r[0] < opened && r[9 + i] > 0.0);
        assert!(early.is_none(), "wave {i} healthy before it opened: {w}");
    }
    for plot in ["completion", "origin", "waves", "states", "coordinator"] {
        let svg = std::fs::read_to_string(out.join(format!("{plot}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{plot}.svg"
        );
    }
    let waves_svg = std::fs::read_to_string(out.join("waves.svg")).unwrap();
    assert!(waves_svg.contains("canary") && waves_svg.contains("broad"));
}

#[test]
fn no_node_activates_before_it_holds_the_release() {
    // 256 MiB at 100 Mbit/s takes a receiver at least 21.5 s; the rollout starts at once, while
    // the nodes are still joining the mesh.
    let dir = tempfile::tempdir().unwrap();
    let plan = committed("plans/canary-pilot-broad.toml");
    let text = format!(
        r#"
[fleet]
nodes = 30
regions = 3
fault_domains = 2
upload = "100mbit"
download = "100mbit"
[release]
size = "256MiB"
piece_size = "4MiB"
[rollout]
plan = "{}"
start_secs = 0
"#,
        plan.display()
    );
    let file = scenario(dir.path(), "early.toml", &text);
    let v = json_of(&sim(&["run", file.to_str().unwrap(), "--json"]));
    assert_eq!(v["rollout_state"], "completed", "{v}");
    let fastest = 256.0 * 1024.0 * 1024.0 * 8.0 / 100e6;
    let canary = v["waves"][0]["healthy_secs"].as_f64().unwrap();
    assert!(
        canary > fastest,
        "the canary passed before it could hold the release: {v}"
    );
}

#[test]
fn a_bad_release_is_stopped_at_the_canary() {
    let v = rollout_run("bad-release-canary.toml");
    assert_eq!(v["rollout_state"], "rolled_back", "{v}");
    let again = rollout_run("bad-release-canary.toml");
    assert_eq!(
        (&v["waves"], v["events"].as_u64()),
        (&again["waves"], again["events"].as_u64()),
        "the same seed replays the same rollout"
    );
    assert_eq!(v["activated_nodes"], 1, "only the canary activated it: {v}");
    let waves = v["waves"].as_array().unwrap();
    assert_eq!(waves[0]["stage"], "canary");
    assert_eq!(waves[0]["failed"], 1, "{v}");
    assert!(waves[0]["healthy_secs"].is_null(), "{v}");
    assert!(
        waves[1..].iter().all(|w| w["started_secs"].is_null()),
        "{v}"
    );
}

#[test]
fn a_missing_or_broken_plan_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(
        dir.path(),
        "missing.toml",
        &format!("{SMALL}[rollout]\nplan = \"nowhere.toml\"\n"),
    );
    let err = String::from_utf8_lossy(&sim(&["run", file.to_str().unwrap()]).stderr).into_owned();
    assert!(
        err.contains("missing.toml") && err.contains("nowhere.toml"),
        "{err}"
    );
    std::fs::write(dir.path().join("broken.toml"), "stage = 3\n").unwrap();
    let file = scenario(
        dir.path(),
        "uses-broken.toml",
        &format!("{SMALL}[rollout]\nplan = \"broken.toml\"\n"),
    );
    let out = sim(&["run", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("broken.toml"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_rollout_that_pauses_on_failure_ends_the_run_paused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pause.toml"),
        r#"
[[stage]]
name = "canary"
size = "1"
bake_secs = 0
success = "100%"
failure_threshold = "1"
deadline_secs = 600
on_failure = "pause"
"#,
    )
    .unwrap();
    let text = format!(
        "{}[rollout]\nplan = \"pause.toml\"\nstart_secs = 15\n[[fault]]\nat_secs = 0\nkind = \"bad_release\"\n",
        SMALL
    );
    let file = scenario(dir.path(), "paused.toml", &text);
    let v = json_of(&sim(&["run", file.to_str().unwrap(), "--json"]));
    assert_eq!(v["rollout_state"], "paused", "{v}");
    assert_eq!(v["waves"][0]["failed"], 1, "{v}");
    assert!(v["simulated_secs"].as_f64().unwrap() < 600.0, "{v}");
}
