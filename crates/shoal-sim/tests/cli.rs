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
