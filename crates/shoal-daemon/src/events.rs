//! The local subscription socket: a process on the node's machine subscribes to a service and
//! receives one JSON line per change of it (activated, rolled back, health), as `shoal watch`
//! does.
//!
//! The node listens on `events.sock` in its data directory (a Unix socket: only processes on
//! the machine that may open the data directory reach it). A subscriber sends one line, the
//! service's name, and gets the service's state at once, then a line per change. Each
//! subscriber has a queue of [`QUEUE`] lines; the agent never waits for a subscriber, and one
//! that does not read its queue is disconnected and counted, so a stuck subscriber neither
//! blocks the node nor makes it grow.

use crate::agent::{AgentStatus, ServiceStatus};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// The socket's file in the data directory.
pub const SOCKET_FILE: &str = "events.sock";
/// Lines a subscriber may have waiting before it is disconnected.
pub const QUEUE: usize = 256;
/// The longest subscription line read.
const MAX_REQUEST: usize = 256;
/// Subscribers served at once; more are refused with a message.
pub const MAX_SUBSCRIBERS: usize = 64;

/// One line to a subscriber.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// `state` (the first line, and a change of health), `activated` (healthy on a new
    /// version) or `rolled_back`.
    pub event: &'static str,
    /// The service, as `shoal status --node` shows it.
    #[serde(flatten)]
    pub service: ServiceStatus,
    /// When (Unix seconds).
    pub at: u64,
}

struct Subscriber {
    service: String,
    queue: mpsc::Sender<Arc<str>>,
}

#[derive(Default)]
struct State {
    last: AgentStatus,
    subscribers: Vec<Subscriber>,
    activations: Activations,
}

/// Activations as the agent's changes show them, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Activations {
    /// Per (service, outcome: `activated`, `failed`, `rolled_back`), how many.
    pub outcomes: std::collections::BTreeMap<(String, &'static str), u64>,
    /// Per service, the seconds its finished activations took, from `activating` to the
    /// outcome, summed.
    pub seconds: std::collections::BTreeMap<String, f64>,
    started: std::collections::BTreeMap<String, std::time::Instant>,
}

impl Activations {
    fn note(&mut self, before: Option<&ServiceStatus>, now: &ServiceStatus, event: Option<&str>) {
        let was = before.map(|b| b.state.as_str());
        if now.state == "activating" && was != Some("activating") {
            self.started
                .insert(now.name.clone(), std::time::Instant::now());
        }
        let outcome = match (event, now.state.as_str()) {
            (Some("activated"), _) => "activated",
            (Some("rolled_back"), _) => "rolled_back",
            (_, "failed") if was != Some("failed") => "failed",
            _ => return,
        };
        *self
            .outcomes
            .entry((now.name.clone(), outcome))
            .or_default() += 1;
        if let Some(since) = self.started.remove(&now.name) {
            *self.seconds.entry(now.name.clone()).or_default() += since.elapsed().as_secs_f64();
        }
    }
}

/// The subscriptions. Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    dropped: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The event for `service` going from `before` to `now`, if it changed in a way a subscriber
/// hears of.
fn event(before: Option<&ServiceStatus>, now: &ServiceStatus) -> Option<&'static str> {
    if before == Some(now) {
        return None;
    }
    let before_state = before.map(|b| b.state.as_str());
    let before_version = before.map(|b| b.version.as_str());
    match now.state.as_str() {
        "healthy" if before_version != Some(now.version.as_str()) => Some("activated"),
        "rolled_back" if before_state != Some("rolled_back") => Some("rolled_back"),
        _ if before_state != Some(now.state.as_str()) => Some("state"),
        _ => None,
    }
}

impl Hub {
    /// Takes the agent's new status and tells each subscriber of its service's change. Never
    /// waits: a subscriber whose queue is full is disconnected.
    pub fn update(&self, status: &AgentStatus) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let at = unix_now();
        let mut lines: Vec<(String, Arc<str>)> = Vec::new();
        for now in &status.services {
            let before = state
                .last
                .services
                .iter()
                .find(|s| s.name == now.name)
                .cloned();
            let before = before.as_ref();
            let e = event(before, now);
            state.activations.note(before, now, e);
            if let Some(event) = e {
                let line = Line {
                    event,
                    service: now.clone(),
                    at,
                };
                if let Ok(text) = serde_json::to_string(&line) {
                    lines.push((now.name.clone(), Arc::from(text)));
                }
            }
        }
        state.last = status.clone();
        let dropped = &self.dropped;
        state.subscribers.retain(|s| {
            for (service, line) in &lines {
                if *service != s.service {
                    continue;
                }
                if s.queue.try_send(line.clone()).is_err() {
                    // Full (it does not read) or gone: either way it is let go.
                    if !s.queue.is_closed() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    return false;
                }
            }
            !s.queue.is_closed()
        });
    }

    /// Subscribes to `service`: its state now, then a line per change; `None` when
    /// [`MAX_SUBSCRIBERS`] are served already.
    pub fn subscribe(&self, service: &str) -> Option<mpsc::Receiver<Arc<str>>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.subscribers.retain(|s| !s.queue.is_closed());
        if state.subscribers.len() >= MAX_SUBSCRIBERS {
            return None;
        }
        let now = state
            .last
            .services
            .iter()
            .find(|s| s.name == service)
            .cloned()
            .unwrap_or_else(|| ServiceStatus {
                name: service.to_owned(),
                version: String::new(),
                root: String::new(),
                state: "unknown".into(),
                target: None,
                previous: None,
                reason: None,
            });
        let line = Line {
            event: "state",
            service: now,
            at: unix_now(),
        };
        if let Ok(text) = serde_json::to_string(&line) {
            let _ = tx.try_send(Arc::from(text));
        }
        state.subscribers.push(Subscriber {
            service: service.to_owned(),
            queue: tx,
        });
        Some(rx)
    }

    /// The agent's latest status and its activations so far.
    pub fn snapshot(&self) -> (AgentStatus, Activations) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.last.clone(), state.activations.clone())
    }

    /// Subscribers disconnected because they did not read.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Subscription requests refused as malformed.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .subscribers
            .len()
    }
}

/// The socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Listens on the data directory's socket and serves subscribers until the process ends. A
/// socket file left by an earlier run is replaced.
///
/// # Errors
///
/// If the socket cannot be bound.
pub fn listen(data_dir: &Path, hub: Hub) -> anyhow::Result<()> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for subscribers: {e}", path.display()))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, hub.clone()));
                }
                Err(e) => {
                    tracing::warn!("subscription socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn serve(stream: UnixStream, hub: Hub) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let mut request = String::new();
    let read_ok = reader.read_line(&mut request).await.is_ok();
    let service = request.trim();
    if !read_ok || !request.ends_with('\n') || !crate::services::is_service_name(service) {
        hub.refused.fetch_add(1, Ordering::Relaxed);
        let answer = serde_json::json!({
            "error": format!(
                "send a service name (letters, digits, '-', '_', '.') on one line; got {:?}",
                request.trim_end()
            )
        });
        let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
        return;
    }
    let Some(mut lines) = hub.subscribe(service) else {
        hub.refused.fetch_add(1, Ordering::Relaxed);
        let answer = serde_json::json!({
            "error": format!("this node already serves {MAX_SUBSCRIBERS} subscribers; close one and try again")
        });
        let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
        return;
    };
    while let Some(line) = lines.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() || write.write_all(b"\n").await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, version: &str) -> AgentStatus {
        AgentStatus {
            services: vec![ServiceStatus {
                name: "web".into(),
                version: version.into(),
                root: String::new(),
                state: state.into(),
                target: None,
                previous: None,
                reason: None,
            }],
            ..AgentStatus::default()
        }
    }

    fn next(rx: &mut mpsc::Receiver<Arc<str>>) -> serde_json::Value {
        serde_json::from_str(&rx.try_recv().expect("a line")).expect("JSON")
    }

    #[test]
    fn a_subscriber_hears_the_state_then_each_change_of_its_service() {
        let hub = Hub::default();
        hub.update(&status("healthy", "1.0"));
        let mut rx = hub.subscribe("web").expect("room");
        let mut other = hub.subscribe("db").expect("room");
        assert_eq!(next(&mut rx)["version"], "1.0");
        assert_eq!(next(&mut other)["state"], "unknown");
        hub.update(&status("activating", "1.0"));
        hub.update(&status("healthy", "2.0"));
        hub.update(&status("healthy", "2.0"));
        hub.update(&status("rolled_back", "1.0"));
        let events: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap()["event"].to_string())
            .collect();
        assert_eq!(events, ["\"state\"", "\"activated\"", "\"rolled_back\""]);
        assert!(
            other.try_recv().is_err(),
            "nothing of web reaches a db subscriber"
        );
    }

    #[test]
    fn a_subscriber_that_never_reads_is_let_go_without_holding_the_agent() {
        let hub = Hub::default();
        let stuck = hub.subscribe("web").expect("room");
        for i in 0..(2 * QUEUE) {
            let state = if i % 2 == 0 { "activating" } else { "healthy" };
            hub.update(&status(state, &i.to_string()));
        }
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.dropped(), 1);
        drop(stuck);
    }

    #[test]
    fn subscribers_past_the_limit_are_refused_until_one_leaves() {
        let hub = Hub::default();
        let mut held: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| hub.subscribe("web").expect("room"))
            .collect();
        assert!(hub.subscribe("web").is_none());
        held.pop();
        assert!(hub.subscribe("web").is_some(), "a closed one makes room");
    }
}
