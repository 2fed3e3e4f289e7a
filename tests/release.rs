//! `shoal release create` and `shoal release verify` as a user runs them: roots equal `b3sum`,
//! and every kind of bad input gets its own exit code and a message naming the input.
#![allow(clippy::unwrap_used)]

mod support;

use shoal_core::keys::{Role, SecretKey};
use shoal_core::manifest::{SIGNATURE_DOMAIN, SignedManifest};
use support::{Fixture, b3sum, code, json, ok, run, stderr};

const VERIFY: &[&str] = &["release", "verify", "m.manifest", "--trust", "trust.json"];

fn verify_with(f: &Fixture, extra: &[&str]) -> std::process::Output {
    let mut args = VERIFY.to_vec();
    args.extend_from_slice(extra);
    run(f.path(), &args)
}

#[test]
fn the_root_equals_b3sum_at_every_tree_shape() {
    let f = Fixture::new();
    let piece = 16384usize;
    // Empty, one byte, one chunk, one piece exactly, one piece and a byte, powers of two and
    // odd counts of pieces, a ragged tail.
    for (i, len) in [
        0,
        1,
        1024,
        piece,
        piece + 1,
        2 * piece,
        3 * piece,
        4 * piece + 17,
        13 * piece - 1,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("p{i}.bin");
        let path = f.payload(&name, len, i as u64);
        let out = f.create(&name, "m.manifest", &["--piece-size", "16KiB"]);
        assert_eq!(out["root"], b3sum(&path), "length {len}");
        assert_eq!(out["size"], len as u64);
        assert_eq!(out["piece_size"], piece as u64);
        assert_eq!(out["pieces"], len.div_ceil(piece).max(1) as u64);
        let verified = json(&ok(
            f.path(),
            &[VERIFY, &["--file", &name, "--json"]].concat(),
        ));
        assert_eq!(verified["root"], out["root"]);
        assert_eq!(verified["checks"]["file"], "ok");
    }
    // The default piece size on a multi-piece payload.
    let path = f.payload("big.bin", 5 << 20, 99);
    let out = f.create("big.bin", "m.manifest", &[]);
    assert_eq!(out["root"], b3sum(&path));
    assert_eq!(out["piece_size"], 1 << 20);
    assert_eq!(out["pieces"], 5);
}

#[test]
fn a_file_that_differs_in_one_byte_or_in_length_fails_with_code_8() {
    let f = Fixture::new();
    let path = f.payload("p.bin", 300_000, 5);
    f.create("p.bin", "m.manifest", &["--piece-size", "64KiB"]);
    let mut data = std::fs::read(&path).unwrap();

    data[200_000] ^= 0x01;
    std::fs::write(f.file("flipped.bin"), &data).unwrap();
    let out = verify_with(&f, &["--file", "flipped.bin"]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("flipped.bin"));
    assert!(
        stderr(&out).contains("1 of 5 pieces differ (first: 3)"),
        "{}",
        stderr(&out)
    );

    data[200_000] ^= 0x01;
    data.pop();
    std::fs::write(f.file("short.bin"), &data).unwrap();
    let out = verify_with(&f, &["--file", "short.bin", "--json"]);
    assert_eq!(code(&out), 8);
    let err = json(&out);
    assert_eq!(err["ok"], false);
    assert_eq!(err["error"]["kind"], "file_mismatch");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("299999 bytes")
    );

    data.push(0);
    data.push(0);
    std::fs::write(f.file("long.bin"), &data).unwrap();
    assert_eq!(code(&verify_with(&f, &["--file", "long.bin"])), 8);

    let out = verify_with(&f, &["--file", "missing.bin"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("missing.bin"));
}

#[test]
fn truncated_garbage_and_empty_manifests_fail_with_code_4() {
    let f = Fixture::new();
    f.payload("p.bin", 100_000, 6);
    f.create("p.bin", "m.manifest", &["--piece-size", "16KiB"]);
    let good = std::fs::read(f.file("m.manifest")).unwrap();
    for (name, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("one byte short", good[..good.len() - 1].to_vec()),
        ("empty", Vec::new()),
        ("garbage", support::bytes(4096, 7)),
        ("trailing", [good.as_slice(), b"x"].concat()),
    ] {
        std::fs::write(f.file("m.manifest"), &bytes).unwrap();
        let out = verify_with(&f, &[]);
        assert_eq!(code(&out), 4, "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains("m.manifest"), "{name}");
        assert!(!stderr(&out).contains("panicked"), "{name}");
    }
    let out = run(
        f.path(),
        &[
            "release",
            "verify",
            "nope.manifest",
            "--trust",
            "trust.json",
        ],
    );
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("nope.manifest"));
}

#[test]
fn a_manifest_signed_by_a_key_the_trust_document_does_not_name_fails_with_code_6() {
    let f = Fixture::new();
    f.payload("p.bin", 50_000, 8);
    ok(
        f.path(),
        &[
            "keys",
            "generate",
            "--role",
            "publisher",
            "--out",
            "stranger.key",
        ],
    );
    support::succeeded(f.try_create("p.bin", "stranger.key", "m.manifest", &[]));
    let out = verify_with(&f, &["--json"]);
    assert_eq!(code(&out), 6);
    assert_eq!(json(&out)["error"]["kind"], "signature");
    assert!(stderr(&out).contains("does not name as a publisher"));

    // A manifest edited after signing (the release counter bumped) fails the same check.
    f.create("p.bin", "m.manifest", &[]);
    let mut signed = SignedManifest::decode(&std::fs::read(f.file("m.manifest")).unwrap()).unwrap();
    signed.manifest.release_counter += 1;
    std::fs::write(f.file("m.manifest"), signed.encode()).unwrap();
    let out = verify_with(&f, &[]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains("does not verify"));
}

#[test]
fn a_piece_list_that_does_not_combine_to_the_root_fails_with_code_7() {
    let f = Fixture::new();
    f.payload("p.bin", 100_000, 9);
    f.create("p.bin", "m.manifest", &["--piece-size", "16KiB"]);
    let mut signed = SignedManifest::decode(&std::fs::read(f.file("m.manifest")).unwrap()).unwrap();
    signed.manifest.pieces[2].0[0] ^= 1;
    // Re-sign with the real publisher key: the signature is valid, the piece list is not.
    let text = std::fs::read_to_string(f.file("publisher.key")).unwrap();
    let key = SecretKey::from_text(&text)
        .unwrap()
        .expect_role(Role::Publisher)
        .unwrap();
    signed.signature = key.sign(SIGNATURE_DOMAIN, &signed.manifest.signed_bytes());
    std::fs::write(f.file("m.manifest"), signed.encode()).unwrap();
    let out = verify_with(&f, &["--json"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert_eq!(json(&out)["error"]["kind"], "piece_list");
}

#[test]
fn an_invalid_trust_document_or_root_pin_fails_with_code_5() {
    let f = Fixture::new();
    f.payload("p.bin", 10_000, 10);
    f.create("p.bin", "m.manifest", &[]);
    assert_eq!(code(&verify_with(&f, &["--root", "root.key.pub"])), 0);
    ok(
        f.path(),
        &[
            "keys",
            "generate",
            "--role",
            "root",
            "--out",
            "other-root.key",
        ],
    );
    let out = verify_with(&f, &["--root", "other-root.key.pub"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    std::fs::write(f.file("trust.json"), b"{\"body\": 1}").unwrap();
    let out = verify_with(&f, &[]);
    assert_eq!(code(&out), 5);
    assert!(stderr(&out).contains("trust.json"));
}

#[test]
fn bad_piece_sizes_and_missing_payloads_are_refused_and_write_nothing() {
    let f = Fixture::new();
    f.payload("p.bin", 10_000, 11);
    for size in ["3000", "48KiB", "8KiB", "128MiB", "lots"] {
        let out = f.try_create(
            "p.bin",
            "publisher.key",
            "m.manifest",
            &["--piece-size", size],
        );
        assert_ne!(code(&out), 0, "{size}");
        assert!(
            stderr(&out).contains("piece") || stderr(&out).contains(size),
            "{size}: {}",
            stderr(&out)
        );
        assert!(!f.file("m.manifest").exists(), "{size}");
    }
    let out = f.try_create("missing.bin", "publisher.key", "m.manifest", &[]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("missing.bin"));
    let out = run(
        f.path(),
        &[
            "release",
            "create",
            "p.bin",
            "--service",
            "../etc",
            "--version",
            "1",
            "--key",
            "publisher.key",
            "--out",
            "m.manifest",
        ],
    );
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("\"../etc\""), "{}", stderr(&out));
}

#[test]
fn an_unwritable_output_leaves_no_file_behind() {
    let f = Fixture::new();
    f.payload("p.bin", 10_000, 12);
    let out = f.try_create("p.bin", "publisher.key", "no-such-dir/m.manifest", &[]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("no-such-dir/m.manifest"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn out_never_overwrites_a_file_that_is_not_a_manifest() {
    let f = Fixture::new();
    let payload = f.payload("p.bin", 100_000, 14);
    let before = std::fs::read(&payload).unwrap();
    let out = f.try_create("p.bin", "publisher.key", "p.bin", &[]);
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("p.bin exists and is not a shoal manifest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&payload).unwrap(),
        before,
        "the payload was overwritten"
    );
    // An earlier manifest is replaced, as a build script re-running expects.
    f.create("p.bin", "m.manifest", &[]);
    f.create("p.bin", "m.manifest", &["--piece-size", "16KiB"]);
    let m = SignedManifest::decode(&std::fs::read(f.file("m.manifest")).unwrap()).unwrap();
    assert_eq!(m.manifest.piece_size_bytes, 16384);
}

#[test]
fn output_on_a_pipe_has_no_progress_bar() {
    let f = Fixture::new();
    f.payload("p.bin", 3 << 20, 13);
    let out = support::succeeded(f.try_create("p.bin", "publisher.key", "m.manifest", &[]));
    let err = stderr(&out);
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}'),
        "control characters on a pipe: {err:?}"
    );
    // Plain mode prints the root alone on stdout, for scripts.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        b3sum(&f.file("p.bin"))
    );
}
