//! The executor: carries out a service's activation commands on this machine.
//!
//! Every service has a directory `DATA_DIR/services/NAME/`:
//!
//! ```text
//! releases/ROOT/NAME   the payload saved as an executable (supervise mode)
//! current              symlink to releases/ROOT, switched atomically (rename over it)
//! work/                the service's working directory; health commands run here too
//! ```
//!
//! Processes it starts see `SHOAL_SERVICE`, `SHOAL_VERSION`, `SHOAL_ROOT` and `SHOAL_PAYLOAD`
//! (the verified payload in the store). It decides nothing: which command to run and what its
//! result means is up to [`shoal_core::activation`].

use crate::services::{Health, Mode, Service, find_program};
use crate::supervisor::Supervisor;
use anyhow::{Context, Result, bail};
use shoal_core::rollout::Release;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The longest a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes of a failing command's output kept for its reason.
const OUTPUT_TAIL_BYTES: usize = 200;

/// What the executor reports on its own, outside any command's answer.
#[derive(Debug)]
pub enum Event {
    /// A supervised service keeps exiting.
    Crashed {
        /// The service.
        service: String,
        /// How it exits.
        reason: String,
    },
}

/// Runs services' commands. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    services_dir: PathBuf,
    store_dir: PathBuf,
    services: BTreeMap<String, Service>,
    supervisors: BTreeMap<String, Supervisor>,
}

impl Executor {
    /// An executor for `services`, keeping their directories under `data_dir/services` and
    /// reading payloads from the store at `data_dir`. Supervised services' crash reports go to
    /// `events`.
    pub fn new(
        data_dir: &Path,
        services: BTreeMap<String, Service>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        // Absolute, so the `current` link, the executables and the working directories mean
        // the same whatever a child's working directory is.
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let services_dir = data_dir.join("services");
        let supervisors = services
            .values()
            .filter_map(|s| match &s.mode {
                Mode::Supervise { args } => Some((
                    s.name.clone(),
                    Supervisor::start(
                        s.name.clone(),
                        services_dir.join(&s.name),
                        args.clone(),
                        events.clone(),
                    ),
                )),
                Mode::Hooks { .. } => None,
            })
            .collect();
        Executor {
            inner: Arc::new(Inner {
                services_dir,
                store_dir: data_dir,
                services,
                supervisors,
            }),
        }
    }

    fn service(&self, name: &str) -> Result<&Service> {
        self.inner
            .services
            .get(name)
            .with_context(|| format!("no service {name:?} in the services file"))
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.inner.services_dir.join(name)
    }

    fn payload(&self, release: &Release) -> PathBuf {
        self.inner
            .store_dir
            .join("releases")
            .join(release.root.to_hex())
            .join("payload")
    }

    fn env(&self, service: &str, release: &Release) -> Vec<(String, String)> {
        vec![
            ("SHOAL_SERVICE".into(), service.into()),
            ("SHOAL_VERSION".into(), release.version.clone()),
            ("SHOAL_ROOT".into(), release.root.to_hex()),
            (
                "SHOAL_PAYLOAD".into(),
                self.payload(release).display().to_string(),
            ),
        ]
    }

    /// Starts the release a supervised service last ran (after the node restarts).
    ///
    /// # Errors
    ///
    /// If its executable is missing.
    pub async fn resume(&self, service: &str, release: &Release) -> Result<()> {
        if let Some(supervisor) = self.inner.supervisors.get(service) {
            let exe = self.dir(service).join("current").join(service);
            if !exe.exists() {
                bail!("{} is missing", exe.display());
            }
            supervisor.run(exe, self.env(service, release)).await?;
        }
        Ok(())
    }

    /// Stages `release`: saves the executable (supervise) or runs the `pre` hooks.
    ///
    /// # Errors
    ///
    /// A message naming what failed (a full disk, a hook's exit status and output).
    pub async fn prepare(&self, name: &str, release: &Release) -> Result<()> {
        let service = self.service(name)?.clone();
        let dir = self.dir(name);
        let work = dir.join("work");
        let staged = dir.join("releases").join(release.root.to_hex());
        tokio::fs::create_dir_all(&work)
            .await
            .with_context(|| format!("cannot create {}", work.display()))?;
        tokio::fs::create_dir_all(&staged)
            .await
            .with_context(|| format!("cannot create {}", staged.display()))?;
        match &service.mode {
            Mode::Supervise { .. } => {
                let source = self.payload(release);
                let target = staged.join(name);
                let partial = staged.join(format!(".{name}.partial"));
                let copy = async {
                    tokio::fs::copy(&source, &partial).await?;
                    set_executable(&partial).await?;
                    tokio::fs::rename(&partial, &target).await
                };
                if let Err(e) = copy.await {
                    let _ = tokio::fs::remove_file(&partial).await;
                    bail!(
                        "cannot stage {} as {}: {e}",
                        source.display(),
                        target.display()
                    );
                }
            }
            Mode::Hooks { pre, .. } => {
                for command in pre {
                    run_hook(command, &work, &self.env(name, release)).await?;
                }
            }
        }
        Ok(())
    }

    /// Makes `release` the running one: switches `current`, then restarts the supervised
    /// process or runs the `activate` hooks.
    ///
    /// # Errors
    ///
    /// If the link cannot be switched, the process cannot start, or a hook fails.
    pub async fn switch(&self, name: &str, release: &Release) -> Result<()> {
        let service = self.service(name)?.clone();
        let dir = self.dir(name);
        let work = dir.join("work");
        tokio::fs::create_dir_all(&work)
            .await
            .with_context(|| format!("cannot create {}", work.display()))?;
        // The link is relative to its own directory, so the service directory can move.
        let staged = Path::new("releases").join(release.root.to_hex());
        let link = dir.join("current");
        let partial = dir.join(".current.partial");
        let _ = tokio::fs::remove_file(&partial).await;
        tokio::fs::symlink(&staged, &partial)
            .await
            .with_context(|| format!("cannot create {}", partial.display()))?;
        tokio::fs::rename(&partial, &link)
            .await
            .with_context(|| format!("cannot switch {}", link.display()))?;
        match &service.mode {
            Mode::Supervise { .. } => {
                let exe = link.join(name);
                if !exe.exists() {
                    bail!("{} is missing: the release was not staged", exe.display());
                }
                if let Some(supervisor) = self.inner.supervisors.get(name) {
                    supervisor.run(exe, self.env(name, release)).await?;
                }
            }
            Mode::Hooks { activate, .. } => {
                for command in activate {
                    run_hook(command, &work, &self.env(name, release)).await?;
                }
            }
        }
        Ok(())
    }

    /// Runs the health check once against `release`.
    ///
    /// # Errors
    ///
    /// Why the check failed: the command's exit status and output, or the HTTP status or
    /// connection error.
    pub async fn check(&self, name: &str, release: &Release) -> Result<()> {
        let service = self.service(name)?.clone();
        let work = self.dir(name).join("work");
        let timeout = service.check_timeout;
        match &service.health {
            Health::Command(command) => {
                let env = self.env(name, release);
                let run = run_command(command, &work, &env);
                match tokio::time::timeout(timeout, run).await {
                    Ok(result) => result,
                    Err(_) => bail!("health command timed out after {timeout:?}"),
                }
            }
            Health::Http {
                authority,
                path,
                url,
            } => match tokio::time::timeout(timeout, http_status(authority, path)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
                Ok(Ok(status)) => bail!("GET {url}: status {status}"),
                Ok(Err(e)) => bail!("GET {url}: {e:#}"),
                Err(_) => bail!("GET {url}: no answer within {timeout:?}"),
            },
        }
    }

    /// Stops every supervised process.
    pub async fn shutdown(&self) {
        for supervisor in self.inner.supervisors.values() {
            supervisor.stop().await;
        }
    }
}

async fn set_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).await
}

async fn run_hook(command: &[String], dir: &Path, env: &[(String, String)]) -> Result<()> {
    match tokio::time::timeout(HOOK_TIMEOUT, run_command(command, dir, env)).await {
        Ok(result) => result,
        Err(_) => bail!("hook {command:?} timed out after {HOOK_TIMEOUT:?}"),
    }
}

/// Runs `command` in `dir`; `Ok` on exit status 0, else the status and the output's tail.
async fn run_command(command: &[String], dir: &Path, env: &[(String, String)]) -> Result<()> {
    let Some(program) = command.first() else {
        bail!("empty command");
    };
    let program = find_program(program)?;
    let output = tokio::process::Command::new(&program)
        .args(&command[1..])
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {}", program.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if text.is_empty() {
        text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    }
    if text.len() > OUTPUT_TAIL_BYTES {
        let mut start = text.len() - OUTPUT_TAIL_BYTES;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text = format!("...{}", &text[start..]);
    }
    let status = output
        .status
        .code()
        .map_or_else(|| "was killed".to_owned(), |c| format!("exited {c}"));
    if text.is_empty() {
        bail!("{command:?} {status}");
    }
    bail!("{command:?} {status}: {text}");
}

/// GETs `path` from `authority` over plain HTTP/1.1 and returns the status code.
async fn http_status(authority: &str, path: &str) -> Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream.read(&mut head[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = String::from_utf8_lossy(&head[..len]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {line:?}"))
}
