//! Directives a node must refuse, sent into a real mesh by an admitted member that speaks the
//! control protocol: one signed by a key that is not the coordinator's, and, signed by the
//! coordinator's own key, one that has expired, a replay of a rollout's earlier directive, and a
//! wave naming a release with a lower counter than the one running. Every node counts each
//! refusal by reason, and none acts: the service keeps running the release it ran.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/impostor.rs"]
mod impostor;
#[path = "support/rollout_fleet.rs"]
mod rollout_fleet;

use harness::{Work, report, run_ok};
use impostor::Impostor;
use rollout_fleet::*;
use serde_json::Value;
use shoal_core::content::RootHash;
use shoal_core::control::Envelope;
use shoal_core::keys::{Role, SecretKey};
use shoal_core::rollout::directive::StageRule;
use shoal_core::rollout::plan::Size;
use shoal_core::rollout::{Action, Cell, Directive, Release, Selector, Spec};
use shoal_net::mesh::Directive as Body;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long every node has to count a refused directive: a broadcast over a few hops.
const COUNTED_WITHIN: Duration = Duration::from_secs(30);
/// How long after the last refusal is counted the services are watched: longer than a switch
/// and the first health check take, had any node acted.
const HOLD: Duration = Duration::from_secs(5);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn release(version: &str, root: &str, counter: u64) -> Release {
    Release {
        version: version.into(),
        root: root.parse::<RootHash>().unwrap(),
        counter,
    }
}

/// A wave of rollout `rollout` (sequence `seq`) for `web@release` that puts every node in its
/// one stage and opens every cell of the fleet, valid until `expires_at_unix`.
fn wave_everywhere(rollout: u64, seq: u32, release: Release, expires_at_unix: u64) -> Directive {
    let open = (1..=3)
        .flat_map(|r| {
            (1..=2).map(move |fd| Cell {
                stage: 0,
                region: format!("r{r}"),
                fault_domain: fd.to_string(),
            })
        })
        .collect();
    Directive {
        seq,
        expires_at_unix,
        action: Action::Wave,
        spec: Spec {
            rollout,
            service: "web".into(),
            release,
            label_region: "region".into(),
            label_fault_domain: "fd".into(),
            skip_labels: BTreeMap::new(),
            stages: vec![StageRule {
                select: Selector::new(BTreeMap::new()).unwrap(),
                size: Size::Percent(10_000),
                threshold: u64::MAX,
            }],
        },
        open,
    }
}

/// The refusal counts the node at `node` reports, by reason.
fn refused(work: &Work, node: std::net::SocketAddr) -> Result<Value, String> {
    let mut cmd = harness::shoal_command(None);
    cmd.current_dir(work.path())
        .args(["status", "--node", &node.to_string(), "--json"]);
    let out = run_ok(cmd)?;
    let status: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(status["refused_directives"].clone())
}

/// Waits until every node has counted at least `at_least` refusals for `reason`.
fn wait_counted(f: &mut Fleet<'_>, reason: &str, at_least: u64) {
    let nodes = f.mesh.nodes.len();
    let work = f.work;
    f.mesh.wait(
        &format!("every node counts a refused directive ({reason})"),
        COUNTED_WITHIN,
        |mesh| {
            let mut short = Vec::new();
            for i in 0..nodes {
                let n = refused(work, mesh.nodes[i].listen())?[reason]
                    .as_u64()
                    .unwrap_or(0);
                if n < at_least {
                    short.push(format!("node{i}: {n}"));
                }
            }
            if short.is_empty() {
                Ok(())
            } else {
                Err(short.join(", "))
            }
        },
    );
}

#[test]
fn forged_expired_replayed_and_lower_counter_directives_are_refused_counted_and_never_acted_on() {
    let work = Work::new("refusals");
    let mut f = fleet(&work, 6, cell_labels);
    // 0.9 (counter 1) is on every node but never rolled out; 1.0 (counter 2) runs everywhere.
    let old_root = f.publish("0.9", 1, "0.9");
    let current = f.publish("1.0", 2, "1.0");
    let running = f.start("1.0");
    f.wait_state(running, "completed");
    let old = release("0.9", &old_root, 1);
    let current = release("1.0", &current, 2);

    let coordinator_key =
        SecretKey::from_text(&std::fs::read_to_string(work.file("coordinator.key")).unwrap())
            .unwrap();
    let impostor = Impostor::admit(&work, &f.mesh, "impostor");
    // Envelope numbers above anything the coordinator has sent, so the broadcast layer delivers
    // each one and the node's rollout agent is what must refuse it.
    let mut seq = 1_000_000;
    let mut send = |f: &Fleet<'_>, key: &SecretKey, directive: Directive| {
        seq += 1;
        let body = Body::Rollout(std::sync::Arc::new(directive)).encode();
        impostor.gossip(
            &f.mesh.nodes[2],
            Envelope::sign(key, seq, false, body.into()),
        );
    };

    // Expired an hour ago.
    send(
        &f,
        &coordinator_key,
        wave_everywhere(running + 100, 1, current.clone(), unix_now() - 3600),
    );
    // A replay: rollout `running`'s first sequence number, now asking for a rollback.
    let mut replay = wave_everywhere(running, 1, current.clone(), unix_now() + 3600);
    replay.action = Action::Rollback { to: old.clone() };
    send(&f, &coordinator_key, replay);
    // A new rollout of 0.9, whose counter is below the running 1.0's, without a rollback.
    send(
        &f,
        &coordinator_key,
        wave_everywhere(running + 200, 1, old.clone(), unix_now() + 3600),
    );

    for reason in ["expired", "replayed", "lower_counter"] {
        wait_counted(&mut f, reason, 1);
    }
    // Forged: the right contents for a rollback to 0.9, the wrong key. Sent last: the receiving
    // node drops the sender's connection for it, and what came after on it would be lost.
    let rogue = SecretKey::from_seed(Role::Coordinator, [9; 32]);
    let mut forged = wave_everywhere(running, 1_000, current.clone(), unix_now() + 3600);
    forged.action = Action::Rollback { to: old.clone() };
    send(&f, &rogue, forged);
    let target = f.mesh.nodes[2].api.clone();
    f.mesh.wait(
        "the receiving node counts the forged envelope",
        COUNTED_WITHIN,
        |_| {
            let members = target.members()?;
            (members.refused_envelopes >= 1)
                .then_some(())
                .ok_or_else(|| format!("refused_envelopes = {}", members.refused_envelopes))
        },
    );
    std::thread::sleep(HOLD);
    for i in 0..f.mesh.nodes.len() {
        assert_eq!(
            f.service(i),
            ("1.0".to_owned(), "healthy".to_owned()),
            "node{i} acted on a refused directive: {:?}",
            refused(&work, f.mesh.nodes[i].listen())
        );
        assert_eq!(
            f.running(i),
            "1.0",
            "node{i}'s service runs another release"
        );
        assert!(f.starts(i, "0.9").is_empty(), "node{i} started 0.9");
        assert_eq!(f.starts(i, "1.0").len(), 1, "node{i} restarted 1.0");
    }
    report(&format!(
        "[refusals] every node refused and counted them: {}",
        refused(&work, f.mesh.nodes[0].listen()).unwrap()
    ));
}
