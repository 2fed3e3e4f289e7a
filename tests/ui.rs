//! The coordinator's web page in a real browser: headless Chromium (Debian's, installed by
//! `scripts/setup`), driven over the DevTools protocol, opens `/ui` through `shoal proxy` on a
//! coordinator with three nodes. The page renders with no error, shows the numbers the API shows
//! (fleet, region and fault-domain counts, a release's distribution), and follows a rollout as it
//! runs: it shows the rollout completed within 2 s of the API. A screenshot is written to
//! `target/tmp/ui.png`; the first render's time is reported.
#![allow(clippy::unwrap_used)]

#[path = "support/browser.rs"]
mod browser;
#[path = "support/http.rs"]
mod http;

/// `GET path` through the proxy: the JSON answer.
fn call(addr: SocketAddr, path: &str) -> Value {
    http::call(addr, "GET", path, "").json()
}
#[path = "support/mesh.rs"]
mod harness;
#[path = "support/rollout_fleet.rs"]
mod rollout_fleet;

use browser::Browser;
use harness::{Work, needs, report};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the page has to render, and to show a change: far more than it needs.
const WITHIN: Duration = Duration::from_secs(60);

/// The longest the page may lag behind the API (the goal).
const UPDATE_WITHIN: Duration = Duration::from_secs(2);

/// How long the rollout of three nodes may take on a loaded machine.
const ROLLOUT_WITHIN: Duration = Duration::from_secs(300);

/// Waits until `done` holds, at most [`WITHIN`]; returns how long it took.
fn wait(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WITHIN, "{what}: not within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn the_web_page_shows_the_fleet_and_follows_a_rollout() {
    needs("chromium");
    let work = Work::new("ui");
    let mut fleet = rollout_fleet::fleet(&work, 3, rollout_fleet::cell_labels);
    fleet.publish("1.0", 1, "1.0");
    let (_proxy, proxy_at) = http::start_proxy(&work, fleet.mesh.coordinator.listen());
    wait("the proxy answers", || {
        call(proxy_at, "/v1/fleet")["nodes"] == 3
    });

    // It renders, with what the API shows.
    let mut page = Browser::start();
    let opened = Instant::now();
    page.navigate(&format!("http://{proxy_at}/ui"));
    // Until the new document has set it: before it loads, the old one has no such attribute.
    let mut rendered = || {
        page.eval("document.body.dataset.renderedMs")
            .as_str()
            .is_some_and(|ms| !ms.is_empty())
    };
    wait("the page renders", &mut rendered);
    let wall = opened.elapsed();
    let own = page.eval("document.body.dataset.renderedMs");
    report(&format!(
        "/ui first render with 3 nodes: {} ms from navigation (the page's own count: {own} ms)",
        wall.as_millis()
    ));
    let api = call(proxy_at, "/v1/fleet");
    assert_eq!(
        page.eval("document.body.dataset.nodes"),
        api["nodes"].to_string()
    );
    assert_eq!(
        page.eval("document.body.dataset.healthy"),
        api["states"]["healthy"].to_string()
    );
    let release = api["releases"][0]["root"].as_str().unwrap().to_owned();
    assert_eq!(
        page.eval(&format!(
            "document.querySelector('[data-release=\"{release}\"]').textContent"
        )),
        "3"
    );
    wait("the region and fault-domain table", || {
        ["r1/1", "r2/1", "r3/1"].iter().all(|cell| {
            page.eval(&format!(
                "(document.querySelector('[data-cell=\"{cell}\"]') || {{}}).textContent"
            )) == "1"
        })
    });

    // It follows a rollout: the page shows each state change within 2 s of the API.
    let id = fleet.start("1.0");
    let started = Instant::now();
    let mut api_at = None;
    let mut page_at = None;
    let mut page_saw_running = false;
    while api_at.is_none() || page_at.is_none() {
        assert!(
            started.elapsed() < ROLLOUT_WITHIN,
            "the rollout did not complete, or the page did not show it"
        );
        let now = started.elapsed();
        if api_at.is_none() && call(proxy_at, &format!("/v1/rollouts/{id}"))["state"] == "completed"
        {
            api_at = Some(now);
        }
        let shown = page.eval("document.body.dataset.rolloutState");
        page_saw_running |= shown == "running";
        if page_at.is_none() && shown == "completed" {
            page_at = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (api_at, page_at) = (api_at.unwrap(), page_at.unwrap());
    let lag = page_at.saturating_sub(api_at);
    report(&format!(
        "/ui showed the rollout completed {} ms after the API did",
        lag.as_millis()
    ));
    assert!(
        page_saw_running,
        "the page never showed the rollout running"
    );
    assert!(
        lag <= UPDATE_WITHIN,
        "the page lagged {lag:?} behind the API"
    );
    assert_eq!(page.eval("document.body.dataset.errors"), "0");
    assert!(
        page.errors.is_empty(),
        "the page reported errors: {:?}",
        page.errors
    );

    // A screenshot, with the rollout's waves.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui.png");
    page.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    report(&format!("/ui screenshot: {}", shot.display()));
}
