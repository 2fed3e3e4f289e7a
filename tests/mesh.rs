//! End-to-end tests of the control plane on loopback: a real `shoal coordinator` and up to 50
//! real `shoal node` processes that find each other only through `--join` seeds and an
//! onboarding token (no `--peer` lists), then receive announced releases through the mesh.
//!
//! The harness is tests/support/mesh.rs. Every bound below is a named constant with its reason;
//! waits poll until the condition holds and print how long it took, so the figures show in the
//! test output. The tests that start tens of processes take turns ([`BIG_MESH`]), so each gets
//! the machine's two cores to itself.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/impostor.rs"]
mod impostor;

use harness::{
    ACTIVE_VIEW_CAPACITY, Mesh, Work, loopback_listen, report, run_with_timeout, shoal_command,
};
use impostor::Impostor;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// Held by the tests that start a big mesh, so two of them never share the cores.
static BIG_MESH: Mutex<()> = Mutex::new(());

/// How long a mesh has, from its last node's start, until every node holds a full active view
/// and the coordinator counts every node. Joining is a few round trips and the view fills one
/// neighbour request per 500 ms; the rest is 50 debug-build processes starting on two cores.
const FULL_VIEW_WITHIN: Duration = Duration::from_secs(60);

/// How long a 32 MiB release has, from `shoal announce`, to be complete on all 50 nodes. The
/// data is 50 copies (1.6 GiB) encrypted and decrypted once each and hashed on arrival, by
/// debug-build processes sharing two cores; the announcement itself is a broadcast of a few
/// hops.
const RELEASE_EVERYWHERE_WITHIN: Duration = Duration::from_secs(240);

/// How long a small release has, from `shoal announce`, to be complete on every node. It is one
/// piece: a broadcast of a few hops and one fetch per node, which takes about 10 s for 30
/// debug-build nodes on two cores.
const SMALL_RELEASE_WITHIN: Duration = Duration::from_secs(60);

/// How long, from the kill, until no survivor lists a killed node as a neighbour and every
/// survivor has a neighbour again. A silent neighbour is pinged after 1 s, then probed through
/// two others for 1 s; a node that finds itself slow stretches that up to 9 times.
const DEAD_GONE_WITHIN: Duration = Duration::from_secs(60);

/// How long, once the views are clean, until the coordinator's count drops to the survivors: a
/// child's health summary expires 5 s after its last refresh, and the tree repairs on the way.
const COUNT_REPAIRED_WITHIN: Duration = Duration::from_secs(60);

/// How long a mesh of a few nodes has, from its last node's start, until every node has a
/// neighbour and the coordinator counts them all: one join and one health report each.
const SMALL_MESH_SETTLED_WITHIN: Duration = Duration::from_secs(30);

/// How long a node started with a forged token has to exit. The coordinator refuses at once;
/// the node gives up on an unanswered admission request after 15 s.
const REFUSED_EXIT_WITHIN: Duration = Duration::from_secs(45);

/// How long a node certified by a coordinator outside the trust document may try to join: its
/// seeds are reachable and refuse its hello at once, and it retries every few seconds.
const FOREIGN_REFUSED_WITHIN: Duration = Duration::from_secs(30);

/// After the first refusal, how long the outsider keeps trying while the test checks that
/// nobody lets it in. Part of the scenario, not a guess at speed.
const FOREIGN_HOLD: Duration = Duration::from_secs(10);

/// How long a `shoal fetch` without an admission certificate has, against mesh nodes, to give up
/// with the reason. Each node refuses its hello at once; the fetch's own connect timeout is set
/// far beyond this, so only the refusal can end it in time.
const UNCERTIFIED_FETCH_ENDS_WITHIN: Duration = Duration::from_secs(60);

/// The 32 MiB payload of the fifty-node test.
const BIG_RELEASE_BYTES: usize = 32 << 20;

/// A release small enough that only the control plane's speed matters.
const SMALL_RELEASE_BYTES: usize = 1 << 20;

/// Announces `release` and waits until every live node's status shows it complete and the
/// coordinator counts it complete on every live node.
fn announce_and_wait(mesh: &mut Mesh<'_>, release: &harness::Release, within: Duration) {
    let said = mesh.announce(release);
    report(&format!("announce: {}", said.trim()));
    let nodes = mesh.live_nodes().len();
    let root = release.root.clone();
    mesh.wait(
        &format!("release {} complete on all {nodes} nodes", &root[..12]),
        within,
        |mesh| {
            let statuses = mesh.node_statuses()?;
            let missing: Vec<String> = mesh
                .live_nodes()
                .iter()
                .zip(&statuses)
                .filter(|(_, s)| !s.is_complete(&root))
                .map(|(n, s)| format!("{} ({})", n.name, s.progress(&root)))
                .collect();
            if !missing.is_empty() {
                return Err(format!("not complete on {}", missing.join(" ")));
            }
            let complete = mesh.fleet()?.complete(&root);
            if complete != nodes as u64 {
                return Err(format!("the coordinator counts it complete on {complete}"));
            }
            Ok(())
        },
    );
}

/// Tests 1 and 2 of the control plane's acceptance list in one: starting fifty nodes takes a
/// good part of the test's time, so the mesh that proves joining also proves the broadcast.
#[test]
fn fifty_nodes_join_through_three_seeds_fill_their_views_and_all_get_an_announced_release() {
    let _turn = BIG_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let work = Work::new("fifty");
    let mut mesh = Mesh::start_loopback(&work, 50);
    mesh.wait_for_full_views(FULL_VIEW_WITHIN);

    let views = mesh.views().unwrap();
    let rtts: Vec<f64> = views
        .iter()
        .flat_map(|v| v.active.iter().filter_map(|n| n.rtt_ms))
        .collect();
    report(&format!(
        "[fifty] active view sizes {:?}; {} of {} neighbour entries have an RTT",
        views.iter().map(|v| v.active.len()).collect::<Vec<_>>(),
        rtts.len(),
        views.iter().map(|v| v.active.len()).sum::<usize>()
    ));

    // No node was given a --peer list: the release reaches them through membership only.
    let release = work.release("fifty", BIG_RELEASE_BYTES, 50);
    announce_and_wait(&mut mesh, &release, RELEASE_EVERYWHERE_WITHIN);
}

#[test]
fn ten_killed_nodes_are_detected_and_the_mesh_repairs() {
    const NODES: usize = 30;
    const KILLED: usize = 10;
    let _turn = BIG_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let work = Work::new("repair");
    let mut mesh = Mesh::start_loopback(&work, NODES);
    mesh.wait_for_full_views(FULL_VIEW_WITHIN);
    // A release before the kills, so the one after is the mesh's next, not its first.
    let before = work.release("before-kill", SMALL_RELEASE_BYTES, 29);
    announce_and_wait(&mut mesh, &before, SMALL_RELEASE_WITHIN);

    // Every third node from node02: never a seed (the coordinator, node00, node01).
    let victims: Vec<usize> = (0..KILLED).map(|k| 2 + 3 * k).collect();
    assert!(victims.iter().all(|&i| (2..NODES).contains(&i)));
    let mut killed = BTreeSet::new();
    for &i in &victims {
        killed.insert(mesh.nodes[i].peer_id().to_owned());
        mesh.nodes[i].kill();
    }
    let survivors = NODES - KILLED;

    let full = mesh.wait(
        &format!("no survivor lists one of the {KILLED} killed nodes, and each has a neighbour"),
        DEAD_GONE_WITHIN,
        |mesh| {
            let views = mesh.views()?;
            let mut problems = Vec::new();
            for (proc, view) in mesh.live().iter().zip(&views) {
                let dead: Vec<String> = view
                    .active
                    .iter()
                    .filter(|n| killed.contains(&n.peer_id))
                    .map(|n| n.addr.to_string())
                    .collect();
                if !dead.is_empty() {
                    problems.push(format!("{} still lists {}", proc.name, dead.join(" ")));
                }
                if view.active.is_empty() {
                    problems.push(format!("{} has no neighbour", proc.name));
                }
            }
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
            // Only live members, at their own addresses, no duplicates, none above the most.
            mesh.check_views(&views, 1)?;
            let full = views
                .iter()
                .filter(|v| v.active.len() >= ACTIVE_VIEW_CAPACITY)
                .count();
            Ok(full)
        },
    );
    report(&format!(
        "[repair] {full} of {} survivors (coordinator included) have a full view",
        survivors + 1
    ));

    mesh.wait(
        &format!("the coordinator counts the {survivors} surviving nodes"),
        COUNT_REPAIRED_WITHIN,
        |mesh| {
            let fleet = mesh.fleet()?;
            if fleet.nodes == survivors as u64 {
                Ok(())
            } else {
                Err(format!("it counts {} nodes", fleet.nodes))
            }
        },
    );

    let after = work.release("after-kill", SMALL_RELEASE_BYTES, 30);
    announce_and_wait(&mut mesh, &after, SMALL_RELEASE_WITHIN);
}

/// Every announcement must reach every node, not only the first one a mesh sees: nodes that
/// are already connected to each other (and to the coordinator) from an earlier release must
/// swarm for the new one too. Unlike the test above, no churn makes new connections between the
/// announcements.
#[test]
fn every_announced_release_reaches_every_node_not_only_the_first() {
    const NODES: usize = 5;
    const RELEASES: u64 = 3;
    let work = Work::new("successive");
    let mut mesh = Mesh::start_loopback(&work, NODES);
    mesh.wait_for_views(1, SMALL_MESH_SETTLED_WITHIN);
    for k in 0..RELEASES {
        let release = work.release(&format!("successive{k}"), SMALL_RELEASE_BYTES, 100 + k);
        announce_and_wait(&mut mesh, &release, SMALL_RELEASE_WITHIN);
    }
}

/// A token with one character of its signature changed. Token text is `shoal-token-1.` and the
/// base64url encoding of the claims followed by the 64-byte signature, so a character 20 from
/// the end lies inside the signature: the token still decodes and still names the real
/// coordinator, and only the signature check can catch it. (A character in the middle would
/// land in the claims and could instead send the node to another address.)
fn with_forged_signature(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    assert!(
        chars.len() > 120,
        "token too short to hold a signature: {token}"
    );
    let at = chars.len() - 20;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[test]
fn a_node_with_a_forged_certificate_is_refused() {
    let work = Work::new("forged");
    let mut mesh = Mesh::start_loopback(&work, 3);
    mesh.wait_for_views(1, SMALL_MESH_SETTLED_WITHIN);
    let seeds = [mesh.coordinator.listen(), mesh.nodes[0].listen()];
    let forged = with_forged_signature(&mesh.token);
    let i = mesh.add_outsider("forged", loopback_listen(), &seeds, &forged);
    let forged_addr = mesh.outsiders[i].listen();

    let status = mesh.wait(
        "the node with a forged token exits",
        REFUSED_EXIT_WITHIN,
        |mesh| {
            mesh.outsiders[i]
                .exit_status()
                .ok_or_else(|| "it still runs".to_owned())
        },
    );
    let log = mesh.outsiders[i].log_text();
    assert!(
        !status.success(),
        "a node with a forged token exited successfully; its log:\n{log}"
    );
    let lower = log.to_lowercase();
    assert!(
        lower.contains("token") || lower.contains("admission"),
        "the error should say the token or the admission was refused; the log:\n{log}"
    );
    report(&format!(
        "[forged] exited with {status}: {}",
        log.lines().last().unwrap_or("")
    ));

    // Nobody lets it in: every view holds only the mesh's own members, none lists its address,
    // and the coordinator counted the refused admission.
    let views = mesh.views().unwrap();
    mesh.check_views(&views, 0).unwrap();
    for (proc, view) in mesh.live().iter().zip(&views) {
        let listed = view
            .active
            .iter()
            .map(|n| n.addr)
            .chain(view.passive.iter().map(|e| e.addr))
            .any(|a| a == forged_addr);
        assert!(
            !listed,
            "{} lists the refused node {forged_addr}",
            proc.name
        );
    }
    assert!(
        views[0].refused_peers >= 1,
        "the coordinator's refused_peers is {} after refusing an admission",
        views[0].refused_peers
    );
    assert_eq!(mesh.fleet().unwrap().nodes, 3);
}

/// A plain `shoal fetch` holds no admission certificate: mesh nodes refuse it, it says so and how
/// to get the release instead of retrying until killed, and the nodes' logs name what was
/// missing.
#[test]
fn a_fetch_without_a_certificate_is_told_why_it_was_refused() {
    let work = Work::new("uncertified");
    let mut mesh = Mesh::start_loopback(&work, 3);
    mesh.wait_for_views(1, SMALL_MESH_SETTLED_WITHIN);
    let release = work.release("app", SMALL_RELEASE_BYTES, 7);
    let peers = [mesh.nodes[0].listen(), mesh.nodes[1].listen()];
    let mut cmd = shoal_command(None);
    cmd.current_dir(work.path())
        .args(["fetch", release.manifest.to_str().unwrap()])
        .args(["--trust", "trust.json", "--data-dir", "fetch"])
        .args(["--listen", &loopback_listen().to_string()])
        .args([
            "--connect-timeout-secs",
            "600",
            "--stall-timeout-secs",
            "600",
        ]);
    for peer in peers {
        cmd.args(["--peer", &peer.to_string()]);
    }
    let out = run_with_timeout(cmd, UNCERTIFIED_FETCH_ENDS_WITHIN)
        .unwrap_or_else(|e| panic!("the uncertified fetch did not give up: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the fetch succeeded: {stderr}");
    assert!(
        stderr.contains("refused this fetch"),
        "the error does not say the fetch was refused: {stderr}"
    );
    for peer in peers {
        assert!(
            stderr.contains(&peer.to_string()),
            "the error does not name {peer}: {stderr}"
        );
    }
    assert!(
        stderr.contains("sent no admission certificate") && stderr.contains("shoal token create"),
        "the error does not say what was missing and how to get it: {stderr}"
    );
    report(&format!("[uncertified] {}", stderr.trim()));
    let log = mesh.nodes[0].log_text();
    assert!(
        log.contains("sent no admission certificate") && !log.contains("truncated or corrupt"),
        "the node's log does not name the missing certificate:\n{log}"
    );
}

/// The other way to forge admission: a certificate honestly issued, but by a coordinator key the
/// mesh's trust document does not name. The node is admitted by its own coordinator, then
/// presents that certificate to the real mesh's seeds, which must refuse it on the control
/// plane.
#[test]
fn a_node_certified_by_a_coordinator_outside_the_trust_document_is_refused() {
    let work = Work::new("foreign");
    work.other_coordinator("foreign.key", "foreign.json");
    let mut mesh = Mesh::start_loopback(&work, 3);
    mesh.wait_for_views(1, SMALL_MESH_SETTLED_WITHIN);
    let seeds = [mesh.coordinator.listen(), mesh.nodes[0].listen()];
    let before: u64 = mesh.views().unwrap().iter().map(|v| v.refused_peers).sum();

    let foreign = Mesh::start_as(
        &work,
        "foreign-coordinator",
        loopback_listen(),
        None,
        "foreign.key",
        "foreign.json",
    );
    let i = mesh.add_outsider("foreign", loopback_listen(), &seeds, &foreign.token);
    let foreign_peer = mesh.wait(
        "the foreign node is admitted by its own coordinator",
        harness::READY_WITHIN,
        |mesh| mesh.outsiders[i].api.members().map(|m| m.peer_id),
    );

    mesh.wait(
        "the mesh's seeds refuse the foreign node",
        FOREIGN_REFUSED_WITHIN,
        |mesh| {
            let refused: u64 = mesh.views()?.iter().map(|v| v.refused_peers).sum();
            if refused > before {
                Ok(())
            } else {
                Err(format!(
                    "refused_peers summed over the mesh is still {refused}"
                ))
            }
        },
    );
    mesh.hold(FOREIGN_HOLD);
    let views = mesh.views().unwrap();
    mesh.check_views(&views, 0).unwrap();
    for (proc, view) in mesh.live().iter().zip(&views) {
        let listed = view
            .active
            .iter()
            .map(|n| &n.peer_id)
            .chain(view.passive.iter().map(|e| &e.peer_id))
            .any(|p| *p == foreign_peer);
        assert!(
            !listed,
            "{} lists the foreign node {foreign_peer}",
            proc.name
        );
    }
    let own = mesh.outsiders[i].api.members().unwrap();
    let members: BTreeSet<String> = mesh.live_peers().into_keys().collect();
    let inside: Vec<&str> = own
        .active
        .iter()
        .filter(|n| members.contains(&n.peer_id))
        .map(|n| n.peer_id.as_str())
        .collect();
    assert!(
        inside.is_empty(),
        "the foreign node holds mesh members as neighbours: {inside:?}"
    );
    assert_eq!(mesh.fleet().unwrap().nodes, 3);
    drop(foreign);
}

/// How long, from the forged broadcast, until the node that received it has counted it.
const FORGED_COUNTED_WITHIN: Duration = Duration::from_secs(30);

/// After the forged broadcast is counted, how long the test keeps checking that no node acts on
/// it. Part of the scenario: a node that took the announcement starts fetching at once.
const FORGED_HOLD: Duration = Duration::from_secs(5);

/// An admitted member that speaks the real control protocol sends a node a release announcement
/// signed by a key the trust document does not name: the node counts it, disconnects the sender,
/// and no node prefetches the release.
#[test]
fn an_announcement_signed_by_a_key_that_is_not_the_coordinators_is_refused() {
    use shoal_core::control::Envelope;
    use shoal_core::keys::{Role, SecretKey};
    use shoal_net::mesh::Directive;

    let work = Work::new("forged-envelope");
    let mut mesh = Mesh::start_loopback(&work, 3);
    mesh.wait_for_views(1, SMALL_MESH_SETTLED_WITHIN);
    let release = work.release("forged", SMALL_RELEASE_BYTES, 7);
    // Admitted the honest way, with the mesh's own token: only its broadcast is forged.
    let impostor = Impostor::admit(&work, &mesh, "impostor");
    let rogue = SecretKey::from_seed(Role::Coordinator, [9; 32]);
    let directive = Directive::Announce {
        manifest: std::fs::read(&release.manifest).unwrap(),
        origin: impostor.contact,
    };
    let envelope = Envelope::sign(&rogue, 1_000, true, directive.encode().into());
    impostor.gossip(&mesh.nodes[2], envelope);

    let target_api = mesh.nodes[2].api.clone();
    mesh.wait(
        "the receiving node counts the forged envelope",
        FORGED_COUNTED_WITHIN,
        |_| {
            let members = target_api.members()?;
            (members.refused_envelopes >= 1)
                .then_some(())
                .ok_or_else(|| format!("refused_envelopes = {}", members.refused_envelopes))
        },
    );
    std::thread::sleep(FORGED_HOLD);
    for proc in mesh.nodes.iter().chain(std::iter::once(&mesh.coordinator)) {
        let status = proc.api.node_status().unwrap();
        assert!(
            !status.knows(&release.root),
            "{} acted on a forged announcement",
            proc.name
        );
    }
    let fleet = mesh.coordinator.api.fleet().unwrap();
    assert_eq!(fleet.complete(&release.root), 0);
    report("[forged-envelope] counted, and no node took the release");
}
