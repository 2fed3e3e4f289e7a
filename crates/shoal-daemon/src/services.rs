//! The node's services file (`shoal node --services FILE`): which services this node runs and
//! how, checked before the node starts.
//!
//! ```toml
//! [[service]]
//! name = "web"
//! mode = "supervise"                 # or "hooks" with pre = [...] and activate = [...]
//! args = ["--port", "9000"]          # the payload is started as an executable with these
//! health = { command = ["sh", "-c", "test -f ready"], grace_secs = 10, passes = 2 }
//! # or health = { http = "http://127.0.0.1:9000/health", grace_secs = 10, passes = 2 }
//! ```

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use shoal_core::activation::Policy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest services file read.
const MAX_SERVICES_FILE_BYTES: u64 = 1024 * 1024;
/// The most services one node runs.
pub const MAX_SERVICES: usize = 64;

/// How a service is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The node runs the payload as the service's process, with these arguments.
    Supervise {
        /// Arguments after the executable.
        args: Vec<String>,
    },
    /// The node runs the operator's commands.
    Hooks {
        /// Commands run before the switch (staging), each a program and its arguments.
        pre: Vec<Vec<String>>,
        /// Commands run after the switch (e.g. `systemctl restart web`).
        activate: Vec<Vec<String>>,
    },
}

/// How health is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// A command's exit status (0 = healthy), run in the service's working directory.
    Command(Vec<String>),
    /// An HTTP GET's status (2xx = healthy) on `http://HOST:PORT/PATH`.
    Http {
        /// `HOST:PORT`.
        authority: String,
        /// The path, from `/`.
        path: String,
        /// The URL as written, for messages.
        url: String,
    },
}

/// One service, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Its name, as releases are published (`shoal publish --service`).
    pub name: String,
    /// How it runs.
    pub mode: Mode,
    /// How its health is checked.
    pub health: Health,
    /// Grace period, passes and interval.
    pub policy: Policy,
    /// How long one health check may take.
    pub check_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    service: Vec<ServiceFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    mode: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    pre: Vec<Vec<String>>,
    #[serde(default)]
    activate: Vec<Vec<String>>,
    health: HealthFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    command: Option<Vec<String>>,
    http: Option<String>,
    #[serde(default = "default_grace")]
    grace_secs: u64,
    #[serde(default = "default_passes")]
    passes: u32,
    #[serde(default = "default_interval")]
    interval_secs: f64,
    #[serde(default = "default_timeout")]
    timeout_secs: f64,
}

fn default_grace() -> u64 {
    10
}
fn default_passes() -> u32 {
    2
}
fn default_interval() -> f64 {
    1.0
}
fn default_timeout() -> f64 {
    5.0
}

/// Reads and checks a services file.
///
/// # Errors
///
/// If the file cannot be read, is not TOML of this shape, or names a mode, a command or a URL
/// that cannot work: the message names the service, the key and what to do.
pub fn load(path: &Path) -> Result<BTreeMap<String, Service>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read the services file {}", path.display()))?
        .len();
    if len > MAX_SERVICES_FILE_BYTES {
        bail!(
            "{} is {len} bytes: a services file is at most 1 MiB",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the services file {}", path.display()))?;
    parse(&text).with_context(|| format!("services file {}", path.display()))
}

/// Parses and checks the text of a services file.
///
/// # Errors
///
/// As [`load`].
pub fn parse(text: &str) -> Result<BTreeMap<String, Service>> {
    let file: File = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    if file.service.len() > MAX_SERVICES {
        bail!(
            "{} services; at most {MAX_SERVICES} are allowed",
            file.service.len()
        );
    }
    let mut out = BTreeMap::new();
    for s in file.service {
        let service = check(s)?;
        if out.contains_key(&service.name) {
            bail!("two services are named {:?}", service.name);
        }
        out.insert(service.name.clone(), service);
    }
    Ok(out)
}

/// Whether `name` can name a service: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn check(s: ServiceFile) -> Result<Service> {
    let name = s.name;
    if !is_service_name(&name) {
        bail!("service name {name:?}: use 1 to 64 characters of [A-Za-z0-9._-]");
    }
    let mode = match s.mode.as_str() {
        "supervise" => {
            if !s.pre.is_empty() || !s.activate.is_empty() {
                bail!("service {name:?}: pre and activate are for mode = \"hooks\"");
            }
            Mode::Supervise { args: s.args }
        }
        "hooks" => {
            if s.activate.is_empty() {
                bail!(
                    "service {name:?}: mode = \"hooks\" needs activate = [[\"program\", \"arg\", ...]]"
                );
            }
            for (key, commands) in [("pre", &s.pre), ("activate", &s.activate)] {
                for command in commands {
                    executable(&name, key, command)?;
                }
            }
            Mode::Hooks {
                pre: s.pre,
                activate: s.activate,
            }
        }
        other => bail!("service {name:?}: mode {other:?}: give \"supervise\" or \"hooks\""),
    };
    let h = s.health;
    let health = match (h.command, h.http) {
        (Some(command), None) => {
            executable(&name, "health.command", &command)?;
            Health::Command(command)
        }
        (None, Some(url)) => http(&name, &url)?,
        _ => bail!(
            "service {name:?}: health needs exactly one of command = [...] or http = \"http://...\""
        ),
    };
    if h.passes == 0 || h.passes > 100 {
        bail!(
            "service {name:?}: health.passes = {}: give 1 to 100",
            h.passes
        );
    }
    if h.grace_secs == 0 || h.grace_secs > 86_400 {
        bail!(
            "service {name:?}: health.grace_secs = {}: give 1 to 86400",
            h.grace_secs
        );
    }
    let seconds = |key: &str, v: f64| -> Result<Duration> {
        if !(0.05..=3600.0).contains(&v) {
            bail!("service {name:?}: health.{key} = {v}: give 0.05 to 3600 seconds");
        }
        Ok(Duration::from_secs_f64(v))
    };
    let interval = seconds("interval_secs", h.interval_secs)?;
    let check_timeout = seconds("timeout_secs", h.timeout_secs)?;
    Ok(Service {
        name,
        mode,
        health,
        policy: Policy {
            grace: Duration::from_secs(h.grace_secs),
            passes: h.passes,
            interval,
        },
        check_timeout,
    })
}

/// Checks that `command`'s program exists and is executable (searching `PATH` for a bare name).
fn executable(service: &str, key: &str, command: &[String]) -> Result<PathBuf> {
    let Some(program) = command.first() else {
        bail!("service {service:?}: {key} is an empty command: give [\"program\", \"arg\", ...]");
    };
    find_program(program).with_context(|| {
        format!("service {service:?}: {key} runs {program:?}, which is not an executable file here: install it or give its full path")
    })
}

/// The executable `program` names: a path, or a bare name looked up in `PATH`.
pub fn find_program(program: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if is_executable(&p) {
            Ok(p)
        } else {
            bail!("{program} is missing or not executable")
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .with_context(|| format!("{program} is not in PATH"))
}

fn http(service: &str, url: &str) -> Result<Health> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!(
            "service {service:?}: health.http = {url:?}: give an http:// URL (https is not supported for health checks)"
        );
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || !authority.contains(':') {
        bail!(
            "service {service:?}: health.http = {url:?}: give host:port, e.g. http://127.0.0.1:9000/health"
        );
    }
    Ok(Health::Http {
        authority: authority.to_owned(),
        path: path.to_owned(),
        url: url.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supervised_and_a_hooks_service_parse() {
        let services = parse(
            r#"
[[service]]
name = "web"
mode = "supervise"
args = ["--port", "9000"]
health = { command = ["sh", "-c", "test -f ready"], grace_secs = 10, passes = 2 }

[[service]]
name = "db"
mode = "hooks"
pre = [["true"]]
activate = [["sh", "-c", "exit 0"]]
health = { http = "http://127.0.0.1:9000/health", grace_secs = 5, passes = 1 }
"#,
        )
        .unwrap();
        assert_eq!(services.len(), 2);
        let web = &services["web"];
        assert_eq!(
            web.mode,
            Mode::Supervise {
                args: vec!["--port".into(), "9000".into()]
            }
        );
        assert_eq!(web.policy.passes, 2);
        let Health::Http {
            authority, path, ..
        } = &services["db"].health
        else {
            panic!("http health");
        };
        assert_eq!(
            (authority.as_str(), path.as_str()),
            ("127.0.0.1:9000", "/health")
        );
    }

    #[test]
    fn bad_services_files_are_refused_naming_the_problem() {
        let cases = [
            (
                "[[service]]\nname = \"a\"\nmode = \"run\"\nhealth = { command = [\"true\"] }",
                "mode \"run\"",
            ),
            (
                "[[service]]\nname = \"a\"\nmode = \"supervise\"\nhealth = { command = [\"/no/such/check\"] }",
                "not an executable",
            ),
            (
                "[[service]]\nname = \"a\"\nmode = \"hooks\"\nactivate = [[\"no-such-program-here\"]]\nhealth = { command = [\"true\"] }",
                "no-such-program-here",
            ),
            (
                "[[service]]\nname = \"a\"\nmode = \"hooks\"\nhealth = { command = [\"true\"] }",
                "needs activate",
            ),
            (
                "[[service]]\nname = \"a\"\nmode = \"supervise\"\nhealth = { http = \"https://x:1/\" }",
                "http://",
            ),
            (
                "[[service]]\nname = \"a\"\nmode = \"supervise\"\nhealth = { }",
                "exactly one",
            ),
            (
                "[[service]]\nname = \"a\"\nmode = \"supervise\"\ncolour = 1\nhealth = { command = [\"true\"] }",
                "colour",
            ),
            (
                "[[service]]\nname = \"a\"\nmode = \"supervise\"\nhealth = { command = [\"true\"], passes = 0 }",
                "passes",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
