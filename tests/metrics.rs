//! Probes and metrics on real processes: a coordinator and three nodes on loopback, a release
//! published through them, then on every process `GET /health`, `/ready`, `/role` and
//! `/metrics`, the metrics text checked by Debian's `promtool check metrics`, and a real
//! Prometheus (Debian's `prometheus`, installed by `scripts/setup`) scraping all four, its
//! values read back through Prometheus's own HTTP API.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/http.rs"]
mod http;
#[path = "support/rollout_fleet.rs"]
mod rollout_fleet;

use harness::{Mesh, Proc, Work, loopback_listen, needs, report};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the mesh has to hold full views, and a one-piece release to reach every node:
/// a few round trips, by debug-build processes on a loaded two-core machine.
const MESH_WITHIN: Duration = Duration::from_secs(120);

/// How long Prometheus has, from its start, to have scraped every target with the release's
/// bytes: it starts in a second or two and scrapes every second.
const PROMETHEUS_WITHIN: Duration = Duration::from_secs(120);

/// `GET path` on `addr`: status code, headers and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    get_with(addr, path, "")
}

/// `GET path` on `addr` with `headers` (each line ending in CRLF).
fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let answer = http::exchange(addr, "GET", path, headers, "").unwrap();
    (answer.status, answer.head, answer.body)
}

/// `promtool check metrics` on `text`; panics with its complaints unless it accepts it.
fn promtool(name: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{name}: promtool: {said}\n{text}"
    );
}

/// The value of the first sample of `name` with `labels` (as written, e.g.
/// `{direction="received"}`) in a metrics text.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn every_process_answers_probes_and_metrics_that_promtool_and_prometheus_accept() {
    needs("promtool");
    needs("prometheus");
    let work = Work::new("metrics");
    let mut mesh = Mesh::start_loopback(&work, 3);
    mesh.wait_for_views(1, MESH_WITHIN);
    let payload = work.file("app.bin");
    harness::write_random(&payload, 1 << 20, 7);
    mesh.publish(&payload, "app", "1.0", 1, MESH_WITHIN);

    let procs: Vec<&Proc> = std::iter::once(&mesh.coordinator)
        .chain(&mesh.nodes)
        .collect();
    for p in &procs {
        let addr = p.listen();
        let (code, _, body) = get(addr, "/health");
        assert_eq!(code, 200, "{}: /health {body}", p.name);
        let (code, _, body) = get(addr, "/ready");
        assert_eq!(code, 200, "{}: /ready {body}", p.name);
        let (code, _, body) = get(addr, "/role");
        let role = if p.name == "coordinator" {
            "coordinator"
        } else {
            "node"
        };
        assert_eq!(code, 200);
        assert!(
            body.contains(&format!("\"role\":\"{role}\"")),
            "{}: /role {body}",
            p.name
        );
        // The Prometheus text format for a plain GET, OpenMetrics for a client that asks.
        let (code, head, text) = get(addr, "/metrics");
        assert_eq!(code, 200, "{}: /metrics {text}", p.name);
        assert!(
            head.to_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        promtool(&p.name, &text);
        let accept = "Accept: application/openmetrics-text; version=1.0.0\r\n";
        let (code, head, open) = get_with(addr, "/metrics", accept);
        assert_eq!(code, 200);
        assert!(
            head.to_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        report(&format!("{}: /metrics {} bytes", p.name, text.len()));
        if p.name == "coordinator" {
            assert_eq!(sample(&text, "shoal_fleet_nodes "), Some(3.0), "{text}");
            // The origin counts a piece sent once its stream is done, which can come after the
            // receiver verified it: wait for the count rather than read it once.
            let start = Instant::now();
            loop {
                let (_, _, now) = get(addr, "/metrics");
                if sample(&now, "shoal_piece_bytes_total{direction=\"sent\"}").unwrap() > 0.0 {
                    break;
                }
                assert!(
                    start.elapsed() < MESH_WITHIN,
                    "the origin counts no piece bytes sent: {now}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            let got = sample(&text, "shoal_piece_bytes_total{direction=\"received\"}").unwrap();
            assert!(
                got >= f64::from(1u32 << 20),
                "{}: received {got}: {text}",
                p.name
            );
            assert!(sample(&text, "shoal_view_peers{view=\"active\"}").unwrap() >= 1.0);
            let pieces = sample(&text, "shoal_piece_transfers_total{direction=\"received\"}");
            assert!(pieces.unwrap() >= 1.0, "{}: {text}", p.name);
            assert!(sample(&text, "shoal_broadcast_lag ").is_some(), "{text}");
            assert!(
                sample(&text, "shoal_health_reports_sent_total ").unwrap() >= 1.0,
                "{text}"
            );
        }
    }

    // A real Prometheus scraping all four every second.
    let port = loopback_listen().port();
    let targets: Vec<String> = procs.iter().map(|p| format!("'{}'", p.listen())).collect();
    let config = work.file("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: shoal\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(work.file("logs/prometheus.log")).unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.file("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = |q: &str| -> Result<Vec<serde_json::Value>, String> {
        let path = format!("/api/v1/query?query={}", encode(q));
        let stream = TcpStream::connect(api).map_err(|e| e.to_string())?;
        drop(stream);
        let (code, _, body) = get(api, &path);
        if code != 200 {
            return Err(format!("{q}: HTTP {code} {body}"));
        }
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    };
    let value = |s: &serde_json::Value| -> f64 {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let started = Instant::now();
    let mut last;
    let ok = loop {
        let up = query("up == 1").map(|r| r.len());
        let fleet = query("shoal_fleet_nodes").map(|r| r.first().map(value));
        let received = query("sum(shoal_piece_bytes_total{direction=\"received\"})")
            .map(|r| r.first().map(value));
        last = format!("up {up:?}, fleet nodes {fleet:?}, bytes received {received:?}");
        if up == Ok(4)
            && fleet == Ok(Some(3.0))
            && received
                .as_ref()
                .is_ok_and(|r| r.is_some_and(|b| b >= 3.0 * f64::from(1u32 << 20)))
        {
            break true;
        }
        if started.elapsed() > PROMETHEUS_WITHIN || prometheus.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(
        ok,
        "Prometheus did not read the mesh's metrics within {PROMETHEUS_WITHIN:?}: {last}\n{}",
        std::fs::read_to_string(work.file("logs/prometheus.log")).unwrap_or_default()
    );
    report(&format!(
        "Prometheus read every target after {:.1} s: {last}",
        started.elapsed().as_secs_f64()
    ));
}

#[test]
fn a_rollout_shows_in_the_nodes_and_the_coordinators_metrics() {
    needs("promtool");
    let work = Work::new("metrics-rollout");
    let mut f = rollout_fleet::fleet(&work, 3, rollout_fleet::cell_labels);
    let id = f.first_release();
    let (_, _, node) = get(f.mesh.nodes[0].listen(), "/metrics");
    promtool("node00", &node);
    assert_eq!(
        sample(
            &node,
            "shoal_activations_total{service=\"web\",outcome=\"activated\"}"
        ),
        Some(1.0),
        "{node}"
    );
    assert_eq!(
        sample(
            &node,
            "shoal_service_state{service=\"web\",state=\"healthy\"}"
        ),
        Some(1.0),
        "{node}"
    );
    let secs = sample(&node, "shoal_activation_seconds_total{service=\"web\"}").unwrap();
    assert!(secs > 0.0 && secs < 300.0, "{node}");
    assert_eq!(sample(&node, "shoal_subscribers "), Some(0.0), "{node}");
    let (_, _, coordinator) = get(f.mesh.coordinator.listen(), "/metrics");
    promtool("coordinator", &coordinator);
    let state = format!(
        "shoal_rollout_state{{rollout=\"{id}\",service=\"web\",version=\"1.0\",state=\"completed\"}}"
    );
    assert_eq!(sample(&coordinator, &state), Some(1.0), "{coordinator}");
    let healthy: f64 = coordinator
        .lines()
        .filter(|l| {
            l.starts_with(&format!("shoal_rollout_stage_nodes{{rollout=\"{id}\""))
                && l.contains("state=\"healthy\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        healthy, 3.0,
        "every node healthy over the stages: {coordinator}"
    );
}

/// Percent-encodes a query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
