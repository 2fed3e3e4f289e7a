//! The second half of `shoal demo`: a tiny supervised service rolled out canary, pilot, broad
//! over the demo's nodes, with health checks, shown wave by wave; with `--bad-release`, a build
//! that fails its health check, stopped at the canary and rolled back.

use crate::failure::{Code, Failure, Outcome, WithCode};
use shoal_core::rollout::conductor::Status;
use shoal_daemon::routes::ROLLOUTS_PATH;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The services file every demo node runs with.
pub const SERVICES: &str = r#"[[service]]
name = "hello"
mode = "supervise"
health = { command = ["sh", "-c", "test \"$(cat version)\" = \"$SHOAL_VERSION\""], grace_secs = 5, passes = 2, interval_secs = 0.5 }
"#;

const PLAN: &str = r#"one_region_at_a_time = true
fault_domain_by_fault_domain = true
max_parallel_fault_domains = 3

[[stage]]
name = "canary"
select = { region = "r1" }
size = "1"
bake_secs = 1
on_failure = "rollback"

[[stage]]
name = "pilot"
size = "25%"
bake_secs = 1
on_failure = "rollback"

[[stage]]
name = "broad"
size = "100%"
on_failure = "rollback"
"#;

/// A service that says which version it runs; `writes` is what it puts in `version` (a bad
/// build writes something else, so its health check fails).
fn service(writes: &str) -> String {
    format!("#!/bin/sh\necho \"{writes}\" > version\nexec sleep 1000000\n")
}

/// Writes the services file and the plan into `dir`.
pub fn prepare(dir: &Path) -> Outcome {
    for (name, text) in [("services.toml", SERVICES), ("plan.toml", PLAN)] {
        std::fs::write(dir.join(name), text)
            .code(Code::General, || format!("cannot write {name}"))?;
    }
    Ok(())
}

/// Publishes and rolls out `hello` 1.0, then with `bad` a 2.0 that fails its health check.
pub fn run(
    exe: &Path,
    dir: &Path,
    coordinator: SocketAddr,
    nodes: &[SocketAddr],
    bad: bool,
) -> Outcome {
    roll_out(exe, dir, coordinator, "1.0", 1, "1.0", "completed")?;
    if bad {
        roll_out(exe, dir, coordinator, "2.0", 2, "broken", "rolled_back")?;
    }
    println!("services on the nodes:");
    for (i, addr) in nodes.iter().enumerate() {
        let agent: shoal_daemon::agent::AgentStatus =
            crate::http::get(*addr, shoal_daemon::routes::SERVICES_PATH)?;
        for s in &agent.services {
            println!("  node{i}: {} {} {}", s.name, s.version, s.state);
        }
    }
    Ok(())
}

fn roll_out(
    exe: &Path,
    dir: &Path,
    coordinator: SocketAddr,
    version: &str,
    counter: u64,
    writes: &str,
    expect: &str,
) -> Outcome {
    let file = format!("hello-{version}");
    std::fs::write(dir.join(&file), service(writes))
        .code(Code::General, || format!("cannot write {file}"))?;
    let coordinator_arg = coordinator.to_string();
    super::demo::step(
        exe,
        dir,
        &[
            "publish",
            &file,
            "--service",
            "hello",
            "--version",
            version,
            "--key",
            "publisher.key",
            "--coordinator",
            &coordinator_arg,
            "--release-counter",
            &counter.to_string(),
        ],
    )?;
    let what = if writes == version {
        ""
    } else {
        " (a bad build)"
    };
    eprintln!("published hello {version}{what}; rolling it out canary, pilot, broad");
    let started = Instant::now();
    let id = super::demo::output(
        exe,
        dir,
        &[
            "rollout",
            "start",
            "--coordinator",
            &coordinator_arg,
            "--plan",
            "plan.toml",
            "--service",
            "hello",
            "--version",
            version,
        ],
    )?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| Failure::new(Code::General, format!("rollout start printed {id:?}")))?;
    let mut shown = String::new();
    let status = loop {
        let status: Status =
            super::demo::operator(dir)?.get(coordinator, &format!("{ROLLOUTS_PATH}/{id}"))?;
        let line = progress(&status);
        if line != shown {
            eprintln!("  {:>5.1} s  {line}", started.elapsed().as_secs_f64());
            shown = line;
        }
        if status.state != "running" {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(Failure::new(
                Code::General,
                format!("rollout {id} did not finish within 300 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "rollout {id} of hello {version}: {} after {:.1} s{}",
        status.state,
        started.elapsed().as_secs_f64(),
        status
            .reason
            .as_deref()
            .map_or_else(String::new, |r| format!(" ({r})"))
    );
    for (reason, n) in &status.reasons {
        println!("  {n} node(s) failed: {reason}");
    }
    if status.state != expect {
        return Err(Failure::new(
            Code::General,
            format!("rollout {id} ended {}, expected {expect}", status.state),
        ));
    }
    Ok(())
}

/// One line: the wave and each stage's counts.
fn progress(s: &Status) -> String {
    let wave = s.wave.map_or_else(String::new, |w| {
        let cells = s.waves.get(w as usize).map_or_else(String::new, |w| {
            let regions: std::collections::BTreeSet<&str> =
                w.cells.iter().map(|c| c.region.as_str()).collect();
            regions.into_iter().collect::<Vec<_>>().join(",")
        });
        format!("wave {}/{} ({cells})  ", w + 1, s.waves.len())
    });
    let stages: Vec<String> = s
        .stages
        .iter()
        .map(|st| {
            format!(
                "{} {}/{}{}",
                st.name,
                st.healthy,
                st.expected,
                if st.failed > 0 {
                    format!(" {} failed", st.failed)
                } else {
                    String::new()
                }
            )
        })
        .collect();
    format!("{:<12}{wave}{}", s.state, stages.join("  "))
}
