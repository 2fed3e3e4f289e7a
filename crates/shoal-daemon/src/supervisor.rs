//! Supervised services (seed 002's RunIt): the node runs the payload as the service's process,
//! restarts it with backoff when it exits, and reports a service that keeps exiting.
//!
//! One task per service owns its process. The process gets `SIGKILL` when the node dies
//! (`PR_SET_PDEATHSIG`), so a node that is killed and started again never finds an old copy
//! still holding the service's port; the node starts the release it last switched to again.

use crate::executor::Event;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Exits within [`CRASH_WINDOW`] that make a service "keeps exiting".
pub const CRASH_EXITS: usize = 3;
/// The window for [`CRASH_EXITS`].
pub const CRASH_WINDOW: Duration = Duration::from_secs(30);
/// First restart delay; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a stopping process gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

enum Request {
    Run {
        exe: PathBuf,
        env: Vec<(String, String)>,
        reply: oneshot::Sender<Result<()>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// A handle on one service's supervisor task.
pub struct Supervisor {
    requests: mpsc::Sender<Request>,
}

impl Supervisor {
    /// Starts the supervisor of `name`, whose directory is `dir` (the process runs in
    /// `dir/work` with `args`, its output appended to `dir/output.log`).
    pub fn start(
        name: String,
        dir: PathBuf,
        args: Vec<String>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        let (requests, rx) = mpsc::channel(8);
        let task = Task {
            name,
            dir,
            args,
            events,
            child: None,
            running: None,
            exits: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            restart_at: None,
            reported: false,
        };
        tokio::spawn(task.run(rx));
        Supervisor { requests }
    }

    /// Stops the running process (if any) and starts `exe` with `env`.
    ///
    /// # Errors
    ///
    /// If it cannot be started.
    pub async fn run(&self, exe: PathBuf, env: Vec<(String, String)>) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Run { exe, env, reply })
            .await
            .context("the supervisor stopped")?;
        answer.await.context("the supervisor stopped")?
    }

    /// Stops the process; it is not restarted.
    pub async fn stop(&self) {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Stop { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }
}

struct Task {
    name: String,
    dir: PathBuf,
    args: Vec<String>,
    events: mpsc::Sender<Event>,
    child: Option<Child>,
    running: Option<(PathBuf, Vec<(String, String)>)>,
    exits: VecDeque<Instant>,
    backoff: Duration,
    restart_at: Option<Instant>,
    reported: bool,
}

impl Task {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            let restart_at = self.restart_at;
            tokio::select! {
                biased;
                request = requests.recv() => match request {
                    Some(Request::Run { exe, env, reply }) => {
                        self.stop_child().await;
                        self.exits.clear();
                        self.backoff = FIRST_BACKOFF;
                        self.reported = false;
                        self.restart_at = None;
                        self.running = Some((exe, env));
                        let _ = reply.send(self.spawn());
                    }
                    Some(Request::Stop { reply }) => {
                        self.running = None;
                        self.restart_at = None;
                        self.stop_child().await;
                        let _ = reply.send(());
                    }
                    None => {
                        self.stop_child().await;
                        return;
                    }
                },
                status = wait(&mut self.child), if self.child.is_some() => {
                    self.child = None;
                    self.exited(status).await;
                }
                () = sleep_until(restart_at), if restart_at.is_some() && self.child.is_none() => {
                    self.restart_at = None;
                    if let Err(e) = self.spawn() {
                        tracing::warn!(service = %self.name, "restart failed: {e:#}");
                        self.exited(None).await;
                    }
                }
            }
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let Some((exe, env)) = &self.running else {
            return Ok(());
        };
        let work = self.dir.join("work");
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("output.log"))
            .with_context(|| format!("cannot open {}", self.dir.join("output.log").display()))?;
        let err = log.try_clone().context("cannot duplicate the log file")?;
        let mut command = Command::new(exe);
        command
            .args(&self.args)
            .current_dir(&work)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        tracing::info!(service = %self.name, pid = child.id(), "started {}", exe.display());
        self.child = Some(child);
        Ok(())
    }

    async fn exited(&mut self, status: Option<std::process::ExitStatus>) {
        let now = Instant::now();
        self.exits.push_back(now);
        while self
            .exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            self.exits.pop_front();
        }
        let how = status.map_or_else(|| "could not start".to_owned(), |s| s.to_string());
        tracing::warn!(service = %self.name, "process {how}; restarting in {:?}", self.backoff);
        if self.exits.len() >= CRASH_EXITS && !self.reported {
            self.reported = true;
            let reason = format!(
                "exited {} times within {:?}, last: {how}",
                self.exits.len(),
                CRASH_WINDOW
            );
            let _ = self
                .events
                .send(Event::Crashed {
                    service: self.name.clone(),
                    reason,
                })
                .await;
        }
        if self.running.is_some() {
            self.restart_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn stop_child(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: sending a signal to our own child's pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

async fn wait(child: &mut Option<Child>) -> Option<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
