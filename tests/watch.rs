//! The local subscription socket on real processes: `shoal watch` on a node of a small fleet
//! sees its service's state, then the activation a rollout brings; a malformed subscription
//! is refused with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/rollout_fleet.rs"]
mod rollout_fleet;

use harness::{Work, report, shoal_command};
use rollout_fleet::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long the watcher has, after the rollout completed, to have printed the activation: the
/// node sends it as the agent changes, so it is there already; this is for a loaded machine.
const LINE_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn shoal_watch_prints_the_state_then_the_activation_of_a_rollout() {
    let work = Work::new("watch");
    let mut f = fleet(&work, 3, cell_labels);
    let data_dir = f.mesh.nodes[0].data_dir.clone();

    // A malformed subscription is answered with an error line and closed.
    let mut raw = UnixStream::connect(data_dir.join("events.sock")).unwrap();
    raw.write_all(b"not a name!\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&raw).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"error\""), "{answer}");

    let out = work.file("watch.out");
    let mut cmd = shoal_command(None);
    cmd.args(["watch", "--data-dir"])
        .arg(&data_dir)
        .args(["--service", "web"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    let mut watch = cmd.spawn().unwrap();
    // Subscribed once its first line (the state) is out; only then does the rollout start.
    let started = Instant::now();
    while std::fs::read_to_string(&out).unwrap_or_default().is_empty() {
        assert!(
            started.elapsed() < LINE_WITHIN,
            "shoal watch printed nothing"
        );
        assert!(watch.try_wait().unwrap().is_none(), "shoal watch exited");
        std::thread::sleep(Duration::from_millis(100));
    }

    f.first_release();
    let started = Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        if lines
            .iter()
            .any(|l| l["event"] == "activated" && l["version"] == "1.0")
            || started.elapsed() > LINE_WITHIN
        {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = watch.kill();
    let _ = watch.wait();
    report(&format!("shoal watch printed {} lines", lines.len()));
    assert_eq!(lines[0]["event"], "state", "{lines:?}");
    assert_eq!(lines[0]["name"], "web", "{lines:?}");
    let activated = lines
        .iter()
        .find(|l| l["event"] == "activated")
        .unwrap_or_else(|| panic!("no activation: {lines:?}"));
    assert_eq!(activated["version"], "1.0", "{lines:?}");
    assert_eq!(activated["state"], "healthy", "{lines:?}");
    assert!(activated["at"].as_u64().unwrap() > 1_700_000_000);
}
