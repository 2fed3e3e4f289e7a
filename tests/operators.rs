//! Operator keys at a real coordinator: only signed requests by keys the trust document names,
//! within their scopes, change or read anything; unsigned, unknown, expired, replayed, altered
//! and out-of-scope requests are refused with 401 or 403 and a message, counted in `/metrics`,
//! and the audit log says who did what. Coming from the coordinator's own host (all of this
//! runs on loopback) earns nothing.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;
#[path = "support/http.rs"]
mod http;

use harness::{Mesh, Work, loopback_listen, operator_pub, run_with_timeout};
use shoal_core::keys::SecretKey;
use shoal_core::operator::RequestAuth;
use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

/// How long one CLI call may take on a loaded machine.
const CALL_WITHIN: Duration = Duration::from_secs(60);

/// One raw HTTP request: status and body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    auth: Option<&str>,
) -> (u16, String) {
    let auth = auth.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    let answer = http::exchange(addr, method, path, &auth, body).unwrap();
    (answer.status, answer.body)
}

/// `shoal ARGS` in the work directory with `key` as `SHOAL_OPERATOR_KEY` (none: unset).
fn shoal(work: &Work, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = harness::shoal_command(None);
    cmd.current_dir(work.path()).args(args);
    match key {
        Some(key) => cmd.env("SHOAL_OPERATOR_KEY", work.file(key)),
        None => cmd.env_remove("SHOAL_OPERATOR_KEY"),
    };
    run_with_timeout(cmd, CALL_WITHIN).unwrap()
}

fn refused_with(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a refusal, got success");
    assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
}

#[test]
fn only_signed_requests_within_their_scopes_pass_and_the_audit_log_names_who() {
    let work = Work::new("operators");
    for name in ["reader", "stranger"] {
        work.offline(&[
            "keys",
            "generate",
            "--role",
            "operator",
            "--out",
            &format!("{name}.key"),
        ]);
    }
    // The trust document names the harness's key with every scope and the reader with read.
    work.offline(&[
        "trust",
        "init",
        "--root",
        "root.key",
        "--publisher",
        "publisher.key.pub",
        "--coordinator",
        "coordinator.key.pub",
        "--operator",
        &format!("{}=admin,release,read", operator_pub().display()),
        "--operator",
        "reader.key.pub=read",
        "--out",
        "trust.json",
    ]);
    let shown = work.offline(&["trust", "show", "trust.json"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("admin,release,read"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("operator") && l.ends_with(" read"))
    );

    let mesh = Mesh::start(&work, loopback_listen(), None);
    let addr = mesh.coordinator.listen();
    let coordinator = addr.to_string();

    // Probes and metrics stay open.
    assert_eq!(request(addr, "GET", "/health", "", None).0, 200);

    // Unsigned: refused, even from the coordinator's own host.
    let out = shoal(
        &work,
        None,
        &["rollout", "status", "--coordinator", &coordinator],
    );
    refused_with(&out, "not signed");
    refused_with(&out, "SHOAL_OPERATOR_KEY");
    let (code, _) = request(
        addr,
        "POST",
        "/v1/tokens",
        r#"{"ttl_secs":60,"labels":{}}"#,
        None,
    );
    assert_eq!(code, 401);

    // A key the trust document does not name.
    let out = shoal(
        &work,
        Some("stranger.key"),
        &["status", "--coordinator", &coordinator],
    );
    refused_with(&out, "is not named in the coordinator's trust document");

    // A key of another role is refused by the CLI before anything is sent.
    let out = shoal(
        &work,
        Some("publisher.key"),
        &["audit", "--coordinator", &coordinator],
    );
    refused_with(&out, "publisher key, but a operator key is needed");

    // The reader reads, and may not create tokens.
    let out = shoal(
        &work,
        Some("reader.key"),
        &["rollout", "status", "--coordinator", &coordinator],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = shoal(
        &work,
        Some("reader.key"),
        &["token", "create", "--coordinator", &coordinator],
    );
    refused_with(
        &out,
        "has scopes [read], but POST /v1/tokens needs scope admin",
    );

    // Signed by hand: accepted once, then refused as a replay; an altered body, and a time
    // outside the allowed skew, are refused.
    let key = http::operator();
    let body = r#"{"ttl_secs":60,"labels":{}}"#;
    let auth = RequestAuth::sign(
        &key,
        "POST",
        "/v1/tokens",
        body.as_bytes(),
        http::unix_now(),
        [42; 16],
    )
    .header();
    let (code, answer) = request(addr, "POST", "/v1/tokens", body, Some(&auth));
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("shoal-token-1."), "{answer}");
    let (code, answer) = request(addr, "POST", "/v1/tokens", body, Some(&auth));
    assert_eq!(code, 401);
    assert!(answer.contains("received before"), "{answer}");
    let fresh = RequestAuth::sign(
        &key,
        "POST",
        "/v1/tokens",
        body.as_bytes(),
        http::unix_now(),
        [43; 16],
    );
    let (code, answer) = request(
        addr,
        "POST",
        "/v1/tokens",
        r#"{"ttl_secs":2592000,"labels":{}}"#,
        Some(&fresh.header()),
    );
    assert_eq!(code, 401);
    assert!(answer.contains("does not cover this request"), "{answer}");
    let old = RequestAuth::sign(
        &key,
        "GET",
        "/v1/audit",
        b"",
        http::unix_now() - 3600,
        [44; 16],
    );
    let (code, answer) = request(addr, "GET", "/v1/audit", "", Some(&old.header()));
    assert_eq!(code, 401);
    assert!(answer.contains("check both clocks"), "{answer}");
    let (code, answer) = request(addr, "GET", "/v1/audit", "", Some("Shoal-Ed25519 key=zz"));
    assert_eq!(code, 401);
    assert!(answer.contains("hex digits"), "{answer}");

    // The audit log names the operator of each change and each refusal of a known key.
    let out = shoal(
        &work,
        Some("reader.key"),
        &["audit", "--coordinator", &coordinator, "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let reader = SecretKey::from_text(&std::fs::read_to_string(work.file("reader.key")).unwrap())
        .unwrap()
        .public()
        .fingerprint();
    let me = key.public().fingerprint();
    let has = |actor: &str, event: &str| {
        entries
            .iter()
            .any(|e| e["actor"] == actor && e["event"].as_str().is_some_and(|t| t.contains(event)))
    };
    assert!(has(&me, "POST /v1/tokens: 200"), "{entries:#?}");
    assert!(
        has(&reader, "refused POST /v1/tokens (out_of_scope): 403"),
        "{entries:#?}"
    );
    assert!(
        has(&me, "refused POST /v1/tokens (replayed): 401"),
        "{entries:#?}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e["event"].as_str().is_some_and(|t| t.starts_with("GET"))),
        "reads are not audited: {entries:#?}"
    );

    // Every refusal is counted by its reason.
    let (_, metrics) = request(addr, "GET", "/metrics", "", None);
    for (outcome, at_least) in [
        ("unsigned", 2),
        ("unknown_key", 1),
        ("out_of_scope", 1),
        ("replayed", 1),
        ("bad_signature", 1),
        ("expired", 1),
        ("malformed", 1),
        ("accepted", 4),
    ] {
        let line = format!("shoal_operator_requests_total{{outcome=\"{outcome}\"}} ");
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"))
            .parse()
            .unwrap();
        assert!(
            value >= at_least as f64,
            "{line}{value}, expected at least {at_least}"
        );
    }
}

#[test]
fn bad_operator_arguments_are_refused_before_anything_is_signed() {
    let work = Work::new("operator-args");
    work.offline(&["keys", "generate", "--role", "operator", "--out", "op.key"]);
    for (operator, says) in [
        ("op.key.pub", "names no scopes"),
        ("op.key.pub=root", "unknown scope \"root\""),
        ("=read", "names no key file"),
        (
            "publisher.key.pub=read",
            "publisher key, but a operator key is needed",
        ),
    ] {
        let out = shoal(
            &work,
            None,
            &[
                "trust",
                "init",
                "--root",
                "root.key",
                "--publisher",
                "publisher.key.pub",
                "--coordinator",
                "coordinator.key.pub",
                "--operator",
                operator,
                "--out",
                "other.json",
            ],
        );
        refused_with(&out, says);
    }
    let out = shoal(
        &work,
        Some("missing.key"),
        &["rollout", "status", "--coordinator", "127.0.0.1:1"],
    );
    refused_with(&out, "missing.key");
}
