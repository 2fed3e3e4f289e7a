//! `shoal completions` loaded and asked to complete by bash, zsh and fish themselves, and
//! `shoal man` rendered by groff with its warnings on. The shells and groff come from
//! `scripts/setup`.
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;

use harness::{needs, run_with_timeout, shoal_bin, shoal_command};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A shell loading a completion script, or groff rendering a page, takes well under a second;
/// this leaves room for a loaded machine.
const WITHIN: Duration = Duration::from_secs(60);

/// Writes `shoal completions SHELL` into `dir` and returns its path.
fn script(dir: &Path, shell: &str) -> std::path::PathBuf {
    let mut cmd = shoal_command(None);
    cmd.args(["completions", shell]);
    let out = run_with_timeout(cmd, WITHIN).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(format!("shoal.{shell}"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// Runs `shell -c CODE` and returns its stdout; fails on a non-zero exit.
fn shell(shell: &str, code: &str) -> String {
    let mut cmd = Command::new(shell);
    cmd.args(["-c", code]);
    // The scripts complete the binary named `shoal`: put the built one first on the PATH.
    let bin_dir = shoal_bin().parent().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", bin_dir.display()));
    let out = run_with_timeout(cmd, WITHIN).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shell} -c {code:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn bash_completes_subcommands_and_their_flags() {
    needs("bash");
    let dir = tempfile::tempdir().unwrap();
    let file = script(dir.path(), "bash");
    let complete = |words: &str| {
        let code = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _shoal shoal \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        shell("bash", &code)
    };
    let top = complete("shoal co");
    for word in ["config", "coordinator", "completions"] {
        assert!(
            top.lines().any(|l| l == word),
            "`shoal co` misses {word}: {top}"
        );
    }
    let rollout = complete("shoal rollout st");
    assert!(rollout.lines().any(|l| l == "start"), "{rollout}");
    assert!(rollout.lines().any(|l| l == "status"), "{rollout}");
    let flags = complete("shoal node --con");
    assert!(flags.lines().any(|l| l == "--config"), "{flags}");
}

#[test]
fn zsh_loads_the_completion_function() {
    needs("zsh");
    let dir = tempfile::tempdir().unwrap();
    let file = script(dir.path(), "zsh");
    let out = shell(
        "zsh",
        &format!(
            "autoload -U compinit && compinit -u -D && source {} && whence -w _shoal",
            file.display()
        ),
    );
    assert_eq!(out.trim(), "_shoal: function");
}

#[test]
fn fish_completes_subcommands_and_their_flags() {
    needs("fish");
    let dir = tempfile::tempdir().unwrap();
    let file = script(dir.path(), "fish");
    let complete = |line: &str| {
        shell(
            "fish",
            &format!("source {}; complete -C '{line}'", file.display()),
        )
    };
    let top = complete("shoal co");
    for word in ["config", "coordinator", "completions"] {
        assert!(
            top.lines().any(|l| l.split('\t').next() == Some(word)),
            "`shoal co` misses {word}: {top}"
        );
    }
    let flags = complete("shoal node --con");
    assert!(flags.lines().any(|l| l.starts_with("--config")), "{flags}");
}

#[test]
fn the_man_pages_render_without_warnings() {
    needs("groff");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = shoal_command(None);
    cmd.args(["man", "--out"]).arg(dir.path());
    let out = run_with_timeout(cmd, WITHIN).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "shoal.1",
        "shoal-node.1",
        "shoal-rollout-start.1",
        "shoal-config-check.1",
    ] {
        let path = dir.path().join(page);
        assert!(path.is_file(), "{page} was not written");
        let mut groff = Command::new("groff");
        groff.args(["-man", "-Tutf8", "-ww", "-P-cbou"]).arg(&path);
        let out = run_with_timeout(groff, WITHIN).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{page}: {warnings}"
        );
        assert!(text.contains("SYNOPSIS"), "{page}: {text}");
    }
    let node = std::fs::read_to_string(dir.path().join("shoal-node.1")).unwrap();
    assert!(node.contains("config"), "shoal-node.1 names --config");
}
