//! Token revocation and certificate renewal on real processes: a coordinator issuing
//! 30-second certificates and three nodes, one admitted with token A and two with token B.
//! Every node renews its certificate before it expires; once token B is revoked
//! (`shoal token revoke`), no machine joins with it, the list reaches every member (which keeps
//! it in its data directory), the links already up to nodes admitted with it are cut, such a
//! node can no longer renew, and it refuses to start again, naming the revocation.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;

use harness::{Mesh, Work, loopback_listen, run_with_timeout, spread_labels};
use shoal_core::admission::Certificate;
use std::time::{Duration, Instant};

/// The certificates' lifetime: renewals are due 20 s after each issue.
const CERTIFICATE_TTL: &str = "30s";

/// How long a renewal, or the revocation list's broadcast, may take to show: the renewal is
/// due at 20 s and retried 5 s after a failure; a debug build on a loaded two-core machine.
const WITHIN: Duration = Duration::from_secs(120);

fn certificate(work: &Work, node: &str) -> Certificate {
    let bytes = std::fs::read(work.path().join(node).join("admission.cert")).unwrap();
    Certificate::decode(&bytes).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WITHIN, "{what}: not within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    harness::report(&format!(
        "{what}: after {:.1} s",
        start.elapsed().as_secs_f64()
    ));
}

#[test]
fn certificates_are_renewed_and_a_revoked_token_admits_no_one_and_renews_nothing() {
    let work = Work::new("revocation");
    let listen = loopback_listen();
    let addr = listen.to_string();
    let args = [
        "coordinator",
        "--data-dir",
        "coordinator",
        "--listen",
        &addr,
        "--key",
        "coordinator.key",
        "--trust",
        "trust.json",
        "--certificate-ttl",
        CERTIFICATE_TTL,
    ];
    let mut mesh = Mesh::start_with(&work, "coordinator", listen, None, &args);
    let token_a = mesh.token.clone();
    mesh.add_node(loopback_listen(), None, &[listen], &spread_labels(0));
    let token_b = mesh.create_token();
    mesh.token = token_b.clone();
    mesh.add_node(loopback_listen(), None, &[listen], &spread_labels(1));
    mesh.add_node(loopback_listen(), None, &[listen], &spread_labels(2));
    mesh.wait_ready();
    assert_ne!(token_a, token_b);
    // A release, so that the data plane has connections for the revocation to close.
    let payload = work.file("app.bin");
    harness::write_random(&payload, 1 << 20, 3);
    mesh.publish(&payload, "app", "1.0", 1, WITHIN);

    // Renewal: every node's certificate is replaced by a later one before it expires.
    let first: Vec<Certificate> = (0..3)
        .map(|i| certificate(&work, &format!("node{i:02}")))
        .collect();
    assert_eq!(
        first[0].expires_unix_secs() - first[0].issued_unix_secs(),
        30,
        "the coordinator issues certificates of --certificate-ttl"
    );
    assert_eq!(
        first[1].token_id(),
        first[2].token_id(),
        "both joined with token B"
    );
    assert_ne!(first[0].token_id(), first[1].token_id());
    wait_for("every node renewed its certificate", || {
        (0..3).all(|i| {
            let now = certificate(&work, &format!("node{i:02}"));
            now.expires_unix_secs() > first[i].expires_unix_secs()
                && now.token_id() == first[i].token_id()
                && now.labels() == first[i].labels()
        })
    });
    mesh.check_alive();

    // The links that the revocation must cut are up.
    let revoked: Vec<String> = (1..3)
        .map(|i| mesh.nodes[i].api.members().unwrap().peer_id)
        .collect();
    let data_plane_peers = |p: &harness::Proc| -> Vec<String> {
        p.api
            .node_status()
            .map(|s| s.connections.into_iter().map(|c| c.peer_id).collect())
            .unwrap_or_default()
    };
    wait_for(
        "data-plane connections to the nodes of token B are up",
        || {
            [&mesh.coordinator, &mesh.nodes[0]]
                .iter()
                .any(|p| data_plane_peers(p).iter().any(|id| revoked.contains(id)))
        },
    );

    // Revoke token B by its text.
    let coordinator = listen.to_string();
    let out = harness::run_ok({
        let mut cmd = harness::shoal_command(None);
        cmd.current_dir(work.path()).args([
            "token",
            "revoke",
            "--coordinator",
            &coordinator,
            &token_b,
        ]);
        cmd
    })
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let id = hex_id(&first[1]);
    assert!(said.contains(&id), "{said}");
    let again = harness::run_ok({
        let mut cmd = harness::shoal_command(None);
        cmd.current_dir(work.path())
            .args(["token", "revoke", "--coordinator", &coordinator, &id]);
        cmd
    })
    .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("revoked already"));

    // The list reaches every member, which keeps it.
    wait_for("every member keeps the revocation list", || {
        (0..3).all(|i| {
            std::fs::read_to_string(work.path().join(format!("node{i:02}/revoked-tokens.json")))
                .is_ok_and(|text| text.contains(&id))
        })
    });

    // Links already up are cut too: on the control plane the revoked nodes lose every
    // neighbour but each other (whose hellos they refuse as well), on the data plane their
    // connections are closed.
    wait_for(
        "no one keeps a data-plane connection to a revoked node",
        || {
            [&mesh.coordinator, &mesh.nodes[0]]
                .iter()
                .all(|p| data_plane_peers(p).iter().all(|id| !revoked.contains(id)))
        },
    );
    wait_for("the revoked nodes have no neighbour left", || {
        (1..3).all(|i| {
            mesh.nodes[i]
                .api
                .members()
                .is_ok_and(|m| m.active.is_empty())
        }) && mesh.nodes[0]
            .api
            .members()
            .is_ok_and(|m| m.active.iter().all(|n| !revoked.contains(&n.peer_id)))
    });
    let mut data_plane_closes = 0;
    for p in [&mesh.coordinator, &mesh.nodes[0]] {
        let log = p.log_text();
        data_plane_closes += log
            .lines()
            .filter(|l| l.contains("closing a data-plane connection"))
            .count();
        for id in &revoked {
            let cut = |what: &str| {
                log.lines()
                    .any(|l| l.contains(what) && l.contains(id) && l.contains("has been revoked"))
            };
            assert!(
                cut("cut off on the control plane") || cut("closing a data-plane connection"),
                "{}: no link to {id} was cut: {log}",
                p.name
            );
        }
    }
    assert!(
        data_plane_closes > 0,
        "the release's data-plane connections were not closed by the revocation"
    );

    // No machine joins with token B any more.
    let refused_at = loopback_listen();
    let mut cmd = harness::shoal_command(None);
    cmd.current_dir(work.path()).args([
        "node",
        "--data-dir",
        "node-late",
        "--listen",
        &refused_at.to_string(),
        "--join",
        &coordinator,
        "--token",
        &token_b,
        "--labels",
        &spread_labels(3),
    ]);
    let out = run_with_timeout(cmd, WITHIN).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a node joined with a revoked token");
    assert!(stderr.contains("has been revoked"), "{stderr}");

    // Node 0 (token A) keeps renewing; node 1 (token B) cannot.
    let renewed = certificate(&work, "node00");
    let stuck = certificate(&work, "node01");
    wait_for("node 0 renews again", || {
        certificate(&work, "node00").expires_unix_secs() > renewed.expires_unix_secs()
    });
    wait_for("node 1 says its renewal is refused", || {
        mesh.nodes[1].log_text().lines().any(|l| {
            l.contains("cannot renew the admission certificate") && l.contains("has been revoked")
        })
    });
    assert_eq!(
        certificate(&work, "node01"),
        stuck,
        "a revoked token's certificate was renewed"
    );

    // Node 2, started again, refuses to run with its revoked admission.
    mesh.nodes[2].kill();
    let mut cmd = harness::shoal_command(None);
    cmd.current_dir(work.path()).args([
        "node",
        "--data-dir",
        "node02",
        "--listen",
        &mesh.nodes[2].listen().to_string(),
        "--join",
        &coordinator,
        "--labels",
        &spread_labels(2),
    ]);
    let out = run_with_timeout(cmd, WITHIN).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a node admitted with a revoked token started"
    );
    assert!(
        stderr.contains("has been revoked") && stderr.contains("join again with a new token"),
        "{stderr}"
    );

    // The audit log names who revoked it.
    let out = harness::run_ok({
        let mut cmd = harness::shoal_command(None);
        cmd.current_dir(work.path())
            .args(["audit", "--coordinator", &coordinator, "--json"]);
        cmd
    })
    .unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(audit.contains("POST /v1/tokens/revoke: 200"), "{audit}");
}

fn hex_id(certificate: &Certificate) -> String {
    certificate
        .token_id()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
