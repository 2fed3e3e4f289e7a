//! Long-running programs in namespaces: started in their own process group, watched by a
//! thread that reaps them with `wait4` (for CPU time and peak RSS) and, when asked, one that
//! parses their stdout as a stream of JSON values. Everything arrives as [`Event`]s on one
//! channel, stamped with the instant it happened.

use anyhow::{Context as _, Result, anyhow};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process has to exit after SIGTERM before it gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long a killed process has to be reaped before the benchmark gives up on it.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How often a wait looks for an interrupting signal.
const INTERRUPT_POLL: Duration = Duration::from_millis(100);

/// What a process cost over its life, from `wait4`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User plus system CPU time, its reaped children included.
    pub cpu_secs: f64,
    /// Peak resident set size.
    pub peak_rss_bytes: u64,
}

/// Something a process did.
pub enum Report {
    /// A complete JSON value on stdout.
    Json(serde_json::Value),
    /// Stdout held something that is not JSON (the parse error).
    NotJson(String),
    /// It exited; `status` is the raw `wait` status.
    Exited { status: i32, usage: Usage },
}

/// A [`Report`] from process `proc`, at `at`.
pub struct Event {
    /// The index [`Procs::spawn`] returned.
    pub proc: usize,
    /// When the report arrived.
    pub at: Instant,
    /// What happened.
    pub report: Report,
}

struct Proc {
    label: String,
    pid: i32,
    stderr_path: PathBuf,
    exit: Option<(i32, Usage)>,
}

/// The processes of one system's run. Dropping it stops the ones still running.
pub struct Procs {
    ip: PathBuf,
    logs: PathBuf,
    procs: Vec<Proc>,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
}

impl Procs {
    /// No processes yet; their stdout and stderr go to files in `logs`.
    pub fn new(ip: &Path, logs: &Path) -> Result<Procs> {
        std::fs::create_dir_all(logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let (tx, rx) = mpsc::channel();
        Ok(Procs {
            ip: ip.to_path_buf(),
            logs: logs.to_path_buf(),
            procs: Vec::new(),
            tx,
            rx,
        })
    }

    /// Starts `program` in `netns`. With `json_stdout` its stdout is parsed as JSON values,
    /// each an [`Event`]; otherwise it goes to a file. Returns the process's index.
    ///
    /// # Errors
    ///
    /// When the process cannot start.
    pub fn spawn<I, S>(
        &mut self,
        netns: &str,
        label: &str,
        program: &Path,
        args: I,
        json_stdout: bool,
    ) -> Result<usize>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use std::os::unix::process::CommandExt;
        let id = self.procs.len();
        let file_label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let stderr_path = self.logs.join(format!("{id}-{file_label}.stderr"));
        let stdout_path = self.logs.join(format!("{id}-{file_label}.stdout"));
        // `ip netns exec` execs the program, so the child's pid is the program's, and wait4
        // on it measures the program itself.
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .process_group(0);
        // Its own process group keeps Ctrl-C away from it: the benchmark stops it in order.
        // If the benchmark dies without cleaning up, the kernel kills it.
        // SAFETY: the closure runs between fork and exec and only makes one system call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stderr(
            File::create(&stderr_path)
                .with_context(|| format!("cannot create {}", stderr_path.display()))?,
        );
        if json_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(
                File::create(&stdout_path)
                    .with_context(|| format!("cannot create {}", stdout_path.display()))?,
            );
        }
        let what = super::exec::describe(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {label}: {what}"))?;
        let pid = i32::try_from(child.id()).context("process id out of range")?;
        if let Some(stdout) = child.stdout.take() {
            let tx = self.tx.clone();
            std::thread::spawn(move || read_json(id, stdout, &tx));
        }
        // The waiter thread reaps the child; `child` is dropped without waiting, which std
        // allows.
        let tx = self.tx.clone();
        std::thread::spawn(move || reap(id, pid, &tx));
        self.procs.push(Proc {
            label: label.to_string(),
            pid,
            stderr_path,
            exit: None,
        });
        Ok(id)
    }

    /// The next event, or `None` if there is none by `deadline` or a signal interrupted the
    /// benchmark. Exits are also recorded.
    pub fn next_event(&mut self, deadline: Instant) -> Option<Event> {
        loop {
            if super::interrupt::is_set() {
                return None;
            }
            let slice_end = deadline.min(Instant::now() + INTERRUPT_POLL);
            if let Some(event) = self.recv(slice_end) {
                return Some(event);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// The next event by `deadline`, whatever signals arrive.
    fn recv(&mut self, deadline: Instant) -> Option<Event> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let event = self.rx.recv_timeout(wait).ok()?;
        if let Report::Exited { status, usage } = &event.report {
            self.procs[event.proc].exit = Some((*status, *usage));
        }
        Some(event)
    }

    /// Takes every pending event, recording exits, and fails if process `id` has exited.
    ///
    /// # Errors
    ///
    /// When `id` exited: its label, exit status and the end of its stderr.
    pub fn check_running(&mut self, id: usize) -> Result<()> {
        super::interrupt::check()?;
        while self.recv(Instant::now()).is_some() {}
        match self.procs[id].exit {
            Some((status, _)) => Err(self.failure(id, status, "exited early")),
            None => Ok(()),
        }
    }

    /// An error for process `id` that ended with `status`, quoting the end of its stderr.
    pub fn failure(&self, id: usize, status: i32, what: &str) -> anyhow::Error {
        let p = &self.procs[id];
        anyhow!(
            "{} {what} ({}); stderr: {}",
            p.label,
            describe_status(status),
            tail(&p.stderr_path)
        )
    }

    /// The label of process `id`.
    pub fn label(&self, id: usize) -> &str {
        &self.procs[id].label
    }

    /// The process id of process `id`.
    pub fn pid(&self, id: usize) -> i32 {
        self.procs[id].pid
    }

    /// What process `id` cost, once it has exited.
    pub fn usage(&self, id: usize) -> Option<Usage> {
        self.procs[id].exit.map(|(_, u)| u)
    }

    /// Asks every process still running to stop (SIGTERM to its process group), kills those
    /// still there after a grace period, and waits for all of them to be reaped.
    ///
    /// # Errors
    ///
    /// When a process is still not reaped after SIGKILL.
    pub fn stop_all(&mut self) -> Result<()> {
        while self.recv(Instant::now()).is_some() {}
        self.signal_running(libc::SIGTERM);
        let grace_end = Instant::now() + TERM_GRACE;
        while self.procs.iter().any(|p| p.exit.is_none()) {
            if self.recv(grace_end).is_none() {
                break;
            }
        }
        self.signal_running(libc::SIGKILL);
        let kill_end = Instant::now() + KILL_WAIT;
        while self.procs.iter().any(|p| p.exit.is_none()) {
            if self.recv(kill_end).is_none() {
                let left: Vec<&str> = self
                    .procs
                    .iter()
                    .filter(|p| p.exit.is_none())
                    .map(|p| p.label.as_str())
                    .collect();
                anyhow::bail!("still running after SIGKILL: {}", left.join(", "));
            }
        }
        Ok(())
    }

    fn signal_running(&self, signal: i32) {
        for p in self.procs.iter().filter(|p| p.exit.is_none()) {
            // SAFETY: kill has no memory preconditions. The process group is the one
            // `spawn` created, and its leader has not been reaped, so the id is still ours.
            unsafe { libc::kill(-p.pid, signal) };
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            eprintln!("warning: {e:#}");
        }
    }
}

fn read_json(id: usize, stdout: impl Read, tx: &mpsc::Sender<Event>) {
    let values = serde_json::Deserializer::from_reader(BufReader::new(stdout))
        .into_iter::<serde_json::Value>();
    for value in values {
        let report = match value {
            Ok(v) => Report::Json(v),
            Err(e) => Report::NotJson(e.to_string()),
        };
        let stop = matches!(report, Report::NotJson(_));
        let event = Event {
            proc: id,
            at: Instant::now(),
            report,
        };
        if tx.send(event).is_err() || stop {
            return;
        }
    }
}

fn reap(id: usize, pid: i32, tx: &mpsc::Sender<Event>) {
    let mut status = 0;
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is a child of this process that nothing else waits for; status and ru
        // point to live, writable values.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // Cannot happen for our own child; report it as killed so nobody waits forever.
            status = libc::SIGKILL;
            break;
        }
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let usage = Usage {
        cpu_secs: secs(ru.ru_utime) + secs(ru.ru_stime),
        peak_rss_bytes: u64::try_from(ru.ru_maxrss).unwrap_or(0) * 1024,
    };
    let _ = tx.send(Event {
        proc: id,
        at: Instant::now(),
        report: Report::Exited { status, usage },
    });
}

/// `exit code 3` or `killed by signal 9`.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// Whether `status` is a clean exit.
pub fn is_success(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// The last 2 KiB of a log file, on one line.
fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(2048)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).trim().replace('\n', " | "))
    };
    match read() {
        Ok(s) if s.is_empty() => format!("(empty; {})", path.display()),
        Ok(s) => s,
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc`.
///
/// # Errors
///
/// When `/proc/PID/stat` cannot be read or parsed.
pub fn cpu_secs_so_far(pid: i32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3, utime 14 and stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected {path}: {stat}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64)
            .with_context(|| format!("unexpected {path}: {stat}"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}
