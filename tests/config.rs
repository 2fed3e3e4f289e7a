//! Config files: `shoal config check` on the examples in `configs/` and on bad files, and a
//! real coordinator and node started from files, the node with a flag that wins over its file.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;

use harness::{Mesh, Work, loopback_listen, run_with_timeout, shoal_command};
use std::path::Path;
use std::time::Duration;

/// `shoal config check` reads a file and exits; on a loaded machine a debug build still starts
/// in well under this.
const CHECK_WITHIN: Duration = Duration::from_secs(60);

fn check(file: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = shoal_command(None);
    cmd.args(["config", "check"]).arg(file).args(extra);
    run_with_timeout(cmd, CHECK_WITHIN).unwrap()
}

fn configs() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"))
}

#[test]
fn the_example_configs_are_valid_for_their_commands() {
    for (file, command) in [("node.toml", "node"), ("coordinator.toml", "coordinator")] {
        let out = check(&configs().join(file), &["--for", command]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("valid for shoal {command}")),
            "{stdout}"
        );
    }
}

#[test]
fn a_bad_config_file_is_refused_naming_the_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "data-dir = \"/x\"\nlisten = \"nowhere\"\n",
            ":2:",
            "`listen` = \"nowhere\"",
        ),
        (
            "data-dir = \"/x\"\n\ndata_dr = \"/y\"\n",
            ":3:",
            "unknown key `data_dr`",
        ),
        ("data_dir = \"/x\"\n", ":1:", "did you mean `data-dir`"),
        ("data-dir = [\"/a\", \"/b\"]\n", ":1:", "takes one value"),
        ("data-dir = \"/x\"\nlisten = \n", ":2:", "not valid TOML"),
        ("[node]\ndata-dir = \"/x\"\n", ":1:", "is a table"),
        (
            "upload-limit = \"fast\"\n",
            ":1:",
            "`upload-limit` = \"fast\"",
        ),
    ];
    for (i, (text, line, what)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = check(&file, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.contains(&format!("bad{i}.toml{line}")) && stderr.contains(what),
            "{text:?} should name {line} and {what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Starting a node from a bad file fails the same way, before it binds anything.
    let file = dir.path().join("bad0.toml");
    let mut cmd = shoal_command(None);
    cmd.args(["node", "--config"]).arg(&file);
    let out = run_with_timeout(cmd, CHECK_WITHIN).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad0.toml:2: `listen`"), "{stderr}");
    // A file far too big to be one.
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "# x\n".repeat(600_000)).unwrap();
    let out = check(&big, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("big.toml is 2400000 bytes: not a config file"),
        "{stderr}"
    );
    // A file that is not there.
    let out = check(&dir.path().join("missing.toml"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn a_coordinator_and_a_node_run_from_config_files_and_a_flag_wins_over_the_file() {
    let work = Work::new("config");
    let listen = loopback_listen();
    std::fs::write(
        work.file("coordinator.toml"),
        format!(
            "data-dir = \"coordinator\"\nlisten = \"{listen}\"\nkey = \"coordinator.key\"\ntrust = \"trust.json\"\n"
        ),
    )
    .unwrap();
    // `start_with` waits until the coordinator answers on `listen`, the file's address.
    let mut mesh = Mesh::start_with(
        &work,
        "coordinator",
        listen,
        None,
        &["coordinator", "--config", "coordinator.toml"],
    );
    // The node's file names one address; the command line another, which must win.
    let in_file = loopback_listen();
    let on_line = loopback_listen();
    std::fs::write(
        work.file("node.toml"),
        format!(
            "data-dir = \"node00\"\nlisten = \"{in_file}\"\njoin = [\"{listen}\"]\ntoken = \"{}\"\nlabels = \"region=r1,fd=1,rack=1\"\n",
            mesh.token
        ),
    )
    .unwrap();
    let addr = on_line.to_string();
    mesh.add_node_with(
        "node00",
        on_line,
        &["node", "--config", "node.toml", "--listen", &addr],
    );
    // Waits until the node answers on the command line's address and reports it as its own.
    mesh.wait_ready();
    mesh.wait_for_views(1, Duration::from_secs(60));
    let fleet = mesh.fleet().unwrap();
    assert_eq!(fleet.nodes, 1, "the coordinator counts the node: {fleet:?}");
}
