//! `shoal keys` and `shoal trust` as a user runs them.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use support::{Fixture, code, ok, run, stderr};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generated_keys_are_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &["keys", "generate", "--role", "node", "--out", "node.key"],
    );
    assert_eq!(mode(&d.join("node.key")), 0o600);
    assert_eq!(mode(&d.join("node.key.pub")), 0o644);
    let secret = std::fs::read_to_string(d.join("node.key")).unwrap();
    assert!(secret.contains("shoal-secret-key-v1 node "));
    let public = std::fs::read_to_string(d.join("node.key.pub")).unwrap();
    assert!(public.starts_with("shoal-public-key-v1 node "));

    let again = run(
        d,
        &["keys", "generate", "--role", "node", "--out", "node.key"],
    );
    assert_ne!(code(&again), 0);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(d.join("node.key")).unwrap(), secret);
}

#[test]
fn a_world_readable_secret_key_is_refused() {
    let f = Fixture::new();
    f.payload("p.bin", 1000, 1);
    std::fs::set_permissions(
        f.file("publisher.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = f.try_create("p.bin", "publisher.key", "m", &[]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("chmod 600 publisher.key"),
        "{}",
        stderr(&out)
    );
    assert!(!f.file("m").exists());
}

#[test]
fn a_key_of_the_wrong_role_is_refused() {
    let f = Fixture::new();
    f.payload("p.bin", 1000, 1);
    let out = f.try_create("p.bin", "coordinator.key", "m", &[]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("coordinator key, but a publisher key is needed"),
        "{}",
        stderr(&out)
    );
    let out = run(
        f.path(),
        &[
            "trust",
            "init",
            "--root",
            "publisher.key",
            "--publisher",
            "publisher.key.pub",
            "--coordinator",
            "coordinator.key.pub",
            "--out",
            "t.json",
        ],
    );
    assert_ne!(code(&out), 0);
    assert!(!f.file("t.json").exists());
}

#[test]
fn the_trust_document_names_its_keys_and_detects_edits() {
    let f = Fixture::new();
    let out = ok(f.path(), &["trust", "show", "trust.json", "--json"]);
    let doc = support::json(&out);
    let publisher = std::fs::read_to_string(f.file("publisher.key.pub")).unwrap();
    let publisher_hex = publisher.split_whitespace().nth(2).unwrap();
    assert_eq!(doc["publishers"][0], publisher_hex);

    let text = std::fs::read_to_string(f.file("trust.json")).unwrap();
    let coordinator = std::fs::read_to_string(f.file("coordinator.key.pub")).unwrap();
    let coordinator_hex = coordinator.split_whitespace().nth(2).unwrap();
    // Swap roles: make the coordinator a publisher without the root's signature.
    std::fs::write(
        f.file("trust.json"),
        text.replace(publisher_hex, coordinator_hex),
    )
    .unwrap();
    let out = run(f.path(), &["trust", "show", "trust.json"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("signature does not verify"));
}
