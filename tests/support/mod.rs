//! Helpers for the end-to-end tests: run the real `shoal` binary, make keys and payloads.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `shoal` binary cargo built for these tests.
pub fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

/// Runs `shoal ARGS` in `dir` and returns its output.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    shoal()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("spawn shoal")
}

/// Runs `shoal ARGS` in `dir` and panics with its stderr unless it succeeds.
pub fn ok(dir: &Path, args: &[&str]) -> Output {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "shoal {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Panics with its stderr unless `out` is a success; returns it.
pub fn succeeded(out: Output) -> Output {
    assert!(
        out.status.success(),
        "shoal failed ({}): {}",
        out.status,
        stderr(&out)
    );
    out
}

/// Stdout parsed as one JSON value.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The exit code, or -1 if the process was killed by a signal (a panic aborts are reported too).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory with root, publisher and coordinator keys and a trust document naming them:
/// `root.key`, `publisher.key`, `coordinator.key` (with `.pub` files) and `trust.json`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for role in ["root", "publisher", "coordinator"] {
            ok(
                d,
                &[
                    "keys",
                    "generate",
                    "--role",
                    role,
                    "--out",
                    &format!("{role}.key"),
                ],
            );
        }
        ok(
            d,
            &[
                "trust",
                "init",
                "--root",
                "root.key",
                "--publisher",
                "publisher.key.pub",
                "--coordinator",
                "coordinator.key.pub",
                "--out",
                "trust.json",
            ],
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a payload of `len` pseudo-random bytes named `name`.
    pub fn payload(&self, name: &str, len: usize, seed: u64) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, bytes(len, seed)).unwrap();
        path
    }

    /// `shoal release create` of `payload` as `api@1.0.0`, signed with `key`, written to
    /// `manifest`, plus `extra` flags; returns the output whatever happened.
    pub fn try_create(&self, payload: &str, key: &str, manifest: &str, extra: &[&str]) -> Output {
        let mut args = vec!["release", "create", payload, "--service", "api"];
        args.extend_from_slice(&["--version", "1.0.0", "--key", key, "--out", manifest]);
        args.extend_from_slice(extra);
        run(self.path(), &args)
    }

    /// `shoal release create --json` with the fixture's publisher key; returns the parsed output.
    pub fn create(&self, payload: &str, manifest: &str, extra: &[&str]) -> serde_json::Value {
        let extra = [extra, &["--json"]].concat();
        json(&succeeded(self.try_create(
            payload,
            "publisher.key",
            manifest,
            &extra,
        )))
    }
}

/// `len` pseudo-random bytes from `seed` (xorshift), incompressible enough for a payload.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What `b3sum` prints for `path`. Fails the test if `b3sum` is missing: `scripts/setup` installs it.
pub fn b3sum(path: &Path) -> String {
    let out = Command::new("b3sum")
        .arg("--no-names")
        .arg(path)
        .output()
        .expect("b3sum is not installed: run scripts/setup (it installs Debian's b3sum)");
    assert!(out.status.success(), "b3sum failed: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Whether this process runs as root. Tests that need root call [`skip_unless_root`].
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns `true` (and says so on the real stderr, past the test harness's capture) when the
/// test must skip because it needs root.
pub fn skip_unless_root(test: &str, why: &str) -> bool {
    if is_root() {
        return false;
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root to {why}; run the tests as root to cover it"
    );
    true
}

/// A tmpfs of `size` mounted at a fresh directory (or over a given one), unmounted on drop.
/// Root only.
pub struct Tmpfs {
    dir: PathBuf,
    _fresh: Option<tempfile::TempDir>,
}

impl Tmpfs {
    pub fn mount(size: &str, read_only: bool) -> Self {
        let fresh = tempfile::tempdir().unwrap();
        let dir = fresh.path().to_owned();
        Self::mount_at(dir, size, read_only, Some(fresh))
    }

    /// Mounts one over the existing directory `dir`.
    pub fn mount_over(dir: &Path, size: &str) -> Self {
        Self::mount_at(dir.to_owned(), size, false, None)
    }

    fn mount_at(
        dir: PathBuf,
        size: &str,
        read_only: bool,
        fresh: Option<tempfile::TempDir>,
    ) -> Self {
        let opts = if read_only {
            format!("size={size},ro")
        } else {
            format!("size={size}")
        };
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "shoal-test"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {} failed", dir.display());
        Self { dir, _fresh: fresh }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process just killed may still hold a file open on it.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

pub mod bad_peer;
pub mod flooder;
pub mod quic_peer;
pub mod swarm_procs;
