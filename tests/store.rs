//! `shoal store` as a user runs it, including a full disk and an unwritable data directory.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Fixture, Tmpfs, b3sum, code, json, ok, run, skip_unless_root, stderr};

fn import(f: &Fixture, manifest: &str, payload: &str, data_dir: &str) -> std::process::Output {
    run(
        f.path(),
        &[
            "store",
            "import",
            manifest,
            "--file",
            payload,
            "--trust",
            "trust.json",
            "--data-dir",
            data_dir,
        ],
    )
}

#[test]
fn an_imported_release_is_complete_and_its_payload_matches_b3sum() {
    let f = Fixture::new();
    let payload = f.payload("p.bin", 3 << 20, 1);
    f.create("p.bin", "m.manifest", &["--piece-size", "256KiB"]);
    let out = import(&f, "m.manifest", "p.bin", "store");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let list = json(&ok(
        f.path(),
        &["store", "list", "--data-dir", "store", "--json"],
    ));
    let release = &list["releases"][0];
    assert_eq!(release["complete"], true);
    assert_eq!(release["have"], 12);
    assert_eq!(release["total"], 12);
    assert_eq!(release["root"], b3sum(&payload));
    let stored = f.path().join(release["path"].as_str().unwrap());
    assert_eq!(b3sum(&stored), b3sum(&payload));
}

#[test]
fn pin_protects_a_release_from_remove_and_gc() {
    let f = Fixture::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        f.payload(&format!("{name}.bin"), 100_000 + i, i as u64);
        f.create(
            &format!("{name}.bin"),
            &format!("{name}.manifest"),
            &["--release-counter", &(i + 1).to_string()],
        );
        let out = import(
            &f,
            &format!("{name}.manifest"),
            &format!("{name}.bin"),
            "store",
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let list = json(&ok(
        f.path(),
        &["store", "list", "--data-dir", "store", "--json"],
    ));
    let root_of = |counter: u64| {
        list["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["release_counter"] == counter)
            .unwrap()["root"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let oldest = root_of(1);
    ok(
        f.path(),
        &["store", "pin", &oldest[..8], "--data-dir", "store"],
    );
    let out = run(
        f.path(),
        &["store", "remove", &oldest, "--data-dir", "store"],
    );
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("pinned"), "{}", stderr(&out));

    let gc = json(&ok(
        f.path(),
        &[
            "store",
            "gc",
            "--data-dir",
            "store",
            "--keep-previous",
            "0",
            "--json",
        ],
    ));
    let removed: Vec<&str> = gc["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["root"].as_str().unwrap())
        .collect();
    assert_eq!(
        removed,
        vec![root_of(2).as_str()],
        "only the unpinned, non-newest release goes"
    );
}

#[test]
fn a_full_disk_fails_the_import_clearly_and_lists_nothing_complete() {
    if skip_unless_root(
        "a_full_disk_fails_the_import_clearly",
        "mount a small tmpfs",
    ) {
        return;
    }
    let f = Fixture::new();
    f.payload("p.bin", 8 << 20, 2);
    f.create("p.bin", "m.manifest", &[]);
    let disk = Tmpfs::mount("4m", false);
    let data_dir = disk.path().to_str().unwrap();
    let out = import(&f, "m.manifest", "p.bin", data_dir);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("no space left"), "{}", stderr(&out));
    assert!(stderr(&out).contains(data_dir), "{}", stderr(&out));
    let list = json(&ok(
        f.path(),
        &["store", "list", "--data-dir", data_dir, "--json"],
    ));
    assert_eq!(list["releases"].as_array().unwrap().len(), 0, "{list}");
    // Nothing half-created is left to fill the disk.
    assert!(
        std::fs::read_dir(disk.path().join("staging"))
            .unwrap()
            .next()
            .is_none()
    );

    // A release that fits still works on the same disk.
    f.payload("small.bin", 1 << 20, 3);
    f.create("small.bin", "small.manifest", &[]);
    let out = import(&f, "small.manifest", "small.bin", data_dir);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn an_unwritable_data_dir_is_a_clear_error() {
    let f = Fixture::new();
    f.payload("p.bin", 100_000, 4);
    f.create("p.bin", "m.manifest", &[]);
    // A path under a regular file can never be a directory, root or not.
    std::fs::write(f.file("plain-file"), b"x").unwrap();
    let out = import(&f, "m.manifest", "p.bin", "plain-file/store");
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("plain-file/store"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--data-dir"), "{}", stderr(&out));

    if skip_unless_root(
        "an_unwritable_data_dir_is_a_clear_error (read-only mount)",
        "mount a read-only tmpfs",
    ) {
        return;
    }
    let ro = Tmpfs::mount("1m", true);
    let data_dir = ro.path().to_str().unwrap();
    let out = import(&f, "m.manifest", "p.bin", data_dir);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains(data_dir), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_import_of_a_different_file_is_refused_and_nothing_is_complete() {
    let f = Fixture::new();
    f.payload("p.bin", 1 << 20, 5);
    f.create("p.bin", "m.manifest", &["--piece-size", "64KiB"]);
    let mut data = std::fs::read(f.file("p.bin")).unwrap();
    data[500_000] ^= 0xff;
    std::fs::write(f.file("other.bin"), &data).unwrap();
    let out = import(&f, "m.manifest", "other.bin", "store");
    assert_ne!(code(&out), 0);
    assert!(
        stderr(&out).contains("other.bin does not match the manifest"),
        "{}",
        stderr(&out)
    );
    let list = json(&ok(
        f.path(),
        &["store", "list", "--data-dir", "store", "--json"],
    ));
    assert_eq!(list["releases"][0]["complete"], false);
    // Importing the right file afterwards resumes and completes.
    let out = import(&f, "m.manifest", "p.bin", "store");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let list = json(&ok(
        f.path(),
        &["store", "list", "--data-dir", "store", "--json"],
    ));
    assert_eq!(list["releases"][0]["complete"], true);
}
