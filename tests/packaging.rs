//! The packaging in `configs/`: the systemd units pass `systemd-analyze verify` (with the
//! built binary and its man pages in place), the Kustomize base renders with `kubectl
//! kustomize` and its objects pass `kubernetes-validate --strict` (the Kubernetes schemas; from
//! PyPI, installed by `scripts/setup`), the config files inside pass `shoal config check`, the
//! Helm chart names the same objects with the same configs (Helm itself cannot be installed
//! here: no registry this project reaches has it), and the Dockerfile builds in one stage and
//! runs as a non-root user in another.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;

use harness::{needs, run_with_timeout, shoal_bin, shoal_command};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Each tool reads a few files; on a loaded machine well under this.
const WITHIN: Duration = Duration::from_secs(120);

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn run(mut cmd: Command) -> String {
    cmd.stdin(std::process::Stdio::null());
    let out = run_with_timeout(cmd, WITHIN).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    stdout + &stderr
}

#[test]
fn the_systemd_units_verify() {
    needs("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    // The units name /usr/bin/shoal and man:shoal-node(1): put the built binary and its pages
    // where systemd-analyze looks.
    let man = dir.path().join("man");
    let mut cmd = shoal_command(None);
    cmd.args(["man", "--out"]).arg(man.join("man1"));
    run(cmd);
    let mut units = Vec::new();
    for unit in ["shoal-node.service", "shoal-coordinator.service"] {
        let text = std::fs::read_to_string(configs().join("systemd").join(unit)).unwrap();
        for needed in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "StateDirectory=",
            "Restart=",
        ] {
            assert!(text.contains(needed), "{unit} lacks {needed}");
        }
        let path = dir.path().join(unit);
        let bin = shoal_bin().to_str().unwrap().to_owned();
        std::fs::write(&path, text.replace("/usr/bin/shoal", &bin)).unwrap();
        units.push(path);
    }
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").args(&units).env("MANPATH", &man);
    let said = run(cmd);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// The objects of a multi-document YAML text: (kind, metadata name), from their top-level
/// `kind:` and the first `name:` under `metadata:`.
fn objects(text: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for doc in text.split("\n---") {
        let kind = doc
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .map(str::trim);
        let mut in_meta = false;
        let mut name = None;
        for line in doc.lines() {
            if line == "metadata:" {
                in_meta = true;
            } else if in_meta && !line.starts_with(' ') {
                in_meta = false;
            } else if in_meta && name.is_none() {
                name = line.strip_prefix("  name: ").map(str::trim);
            }
        }
        if let (Some(kind), Some(name)) = (kind, name) {
            out.insert((kind.to_owned(), name.to_owned()));
        }
    }
    out
}

fn without_comments(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_kustomize_base_renders_valid_objects_and_the_chart_matches_it() {
    needs("kubectl");
    let validate = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools-venv/bin/kubernetes-validate");
    assert!(
        validate.is_file(),
        "{} is missing: run scripts/setup, which installs it",
        validate.display()
    );
    let mut cmd = Command::new("kubectl");
    cmd.arg("kustomize").arg(configs().join("kubernetes"));
    let out = run_with_timeout(cmd, WITHIN).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let mut cmd = Command::new(&validate);
    cmd.args(["--strict", "--quiet"]).arg(&file);
    let said = run(cmd);
    assert!(!said.contains("ERROR"), "{said}");

    let kustomize = objects(&rendered);
    let expected: BTreeSet<(String, String)> = [
        ("ConfigMap", "shoal-coordinator-config"),
        ("ConfigMap", "shoal-node-config"),
        ("DaemonSet", "shoal-node"),
        ("Service", "shoal-coordinator"),
        ("StatefulSet", "shoal-coordinator"),
    ]
    .iter()
    .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
    .collect();
    assert_eq!(kustomize, expected);
    for probe in [
        "path: /health",
        "path: /ready",
        "hostNetwork: true",
        "clusterIP: None",
    ] {
        assert!(rendered.contains(probe), "the rendered base lacks {probe}");
    }

    // The chart: the same objects, with the same configs in its values.
    let chart = configs().join("helm/shoal");
    let mut templates = String::new();
    for entry in std::fs::read_dir(chart.join("templates")).unwrap() {
        templates.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        templates.push_str("\n---\n");
    }
    assert_eq!(objects(&templates), expected, "the chart's objects");
    let values = std::fs::read_to_string(chart.join("values.yaml")).unwrap();
    for file in ["node.toml", "coordinator.toml"] {
        let toml = std::fs::read_to_string(configs().join("kubernetes").join(file)).unwrap();
        for line in without_comments(&toml) {
            assert!(
                values.lines().any(|v| v.trim() == line),
                "values.yaml lacks {file}'s {line}"
            );
        }
    }
}

#[test]
fn the_config_files_in_the_packaging_are_valid() {
    for (file, command) in [
        ("kubernetes/node.toml", "node"),
        ("kubernetes/coordinator.toml", "coordinator"),
    ] {
        let mut cmd = shoal_command(None);
        cmd.args(["config", "check"])
            .arg(configs().join(file))
            .args(["--for", command]);
        let said = run(cmd);
        assert!(said.contains("valid for shoal"), "{file}: {said}");
    }
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let text = std::fs::read_to_string(configs().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].contains(" AS build"), "{stages:?}");
    let last = text.rsplit("\nFROM ").next().unwrap();
    assert!(
        last.contains("COPY --from=build"),
        "the run stage takes the built binary"
    );
    let user = last
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the run stage names a user");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(last.contains("EXPOSE 7000/tcp 7000/udp 7001/udp"));
}
