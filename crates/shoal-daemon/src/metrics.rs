//! The daemon's part of `/metrics`: a node's services and activations, the coordinator's
//! rollouts. Read at scrape time, as plain samples ([`Sample`]) the API encodes.

use crate::conductor::ConductorHandle;
use crate::events::Hub;
use shoal_net::metrics::{MoreSamples, Sample};
use std::sync::Arc;

fn sample(
    name: &'static str,
    help: &'static str,
    counter: bool,
) -> impl Fn(Vec<(&'static str, String)>, f64) -> Sample {
    move |labels, value| Sample {
        name,
        help,
        counter,
        labels,
        value,
    }
}

/// A node's samples: per service its state, its activations by outcome and the seconds they
/// took; the directives its agent refused; the local subscribers.
pub fn node(hub: Hub) -> MoreSamples {
    Arc::new(move || {
        let hub = hub.clone();
        Box::pin(async move { node_samples(&hub) })
    })
}

fn node_samples(hub: &Hub) -> Vec<Sample> {
    let (status, activations) = hub.snapshot();
    let mut out = Vec::new();
    let state = sample(
        "service_state",
        "1 for each service's current state (idle, staged, activating, healthy, failed, rolled_back)",
        false,
    );
    for s in &status.services {
        out.push(state(
            vec![("service", s.name.clone()), ("state", s.state.clone())],
            1.0,
        ));
    }
    let outcomes = sample(
        "activations",
        "Activations that ended, by service and outcome (activated, failed, rolled_back)",
        true,
    );
    for ((service, outcome), n) in &activations.outcomes {
        out.push(outcomes(
            vec![
                ("service", service.clone()),
                ("outcome", (*outcome).to_owned()),
            ],
            *n as f64,
        ));
    }
    let seconds = sample(
        "activation_seconds",
        "Seconds the ended activations took, from activating to their outcome, summed; over activations_total, the mean",
        true,
    );
    for (service, secs) in &activations.seconds {
        out.push(seconds(vec![("service", service.clone())], *secs));
    }
    let refused = sample(
        "directives_refused",
        "Rollout directives the agent refused, by reason",
        true,
    );
    let r = &status.refused_directives;
    for (reason, n) in [
        ("malformed", r.malformed),
        ("expired", r.expired),
        ("replayed", r.replayed),
        ("lower_counter", r.lower_counter),
        ("unverified", r.unverified),
    ] {
        out.push(refused(vec![("reason", reason.to_owned())], n as f64));
    }
    out.push(sample(
        "subscribers",
        "Local subscribers on the events socket",
        false,
    )(Vec::new(), hub.subscribers() as f64));
    out.push(sample(
        "subscribers_dropped",
        "Local subscribers let go because they did not read",
        true,
    )(Vec::new(), hub.dropped() as f64));
    out.push(sample(
        "subscriptions_refused",
        "Malformed subscription requests on the events socket",
        true,
    )(Vec::new(), hub.refused() as f64));
    out
}

/// The coordinator's samples: for each rollout still running or paused, and the latest one,
/// its state, its current wave and its stages' counts.
pub fn coordinator(conductor: ConductorHandle) -> MoreSamples {
    Arc::new(move || {
        let conductor = conductor.clone();
        Box::pin(async move {
            let Ok(all) = conductor.status(None).await else {
                return Vec::new();
            };
            let latest = all.iter().map(|s| s.id).max();
            let mut out = Vec::new();
            let info = sample(
                "rollout_state",
                "1 for each rollout's state (running, paused, completed, aborted, rolled_back, ...), with its service and version",
                false,
            );
            let wave = sample("rollout_wave", "The rollout's current wave (from 0)", false);
            let waves = sample("rollout_waves", "The waves the rollout was cut into", false);
            let nodes = sample(
                "rollout_stage_nodes",
                "Nodes per rollout stage: expected, activating, healthy, failed",
                false,
            );
            for s in all.iter().filter(|s| {
                matches!(s.state.as_str(), "running" | "paused") || Some(s.id) == latest
            }) {
                let id = s.id.to_string();
                out.push(info(
                    vec![
                        ("rollout", id.clone()),
                        ("service", s.service.clone()),
                        ("version", s.version.clone()),
                        ("state", s.state.clone()),
                    ],
                    1.0,
                ));
                if let Some(w) = s.wave {
                    out.push(wave(vec![("rollout", id.clone())], f64::from(w)));
                }
                out.push(waves(vec![("rollout", id.clone())], s.waves.len() as f64));
                for stage in &s.stages {
                    for (state, n) in [
                        ("expected", stage.expected),
                        ("activating", stage.activating),
                        ("healthy", stage.healthy),
                        ("failed", stage.failed),
                    ] {
                        out.push(nodes(
                            vec![
                                ("rollout", id.clone()),
                                ("stage", stage.name.clone()),
                                ("state", state.to_owned()),
                            ],
                            f64::from(n),
                        ));
                    }
                }
            }
            out
        })
    })
}
