//! Running a short command to completion, with a time limit and errors that name it.

use anyhow::{Context as _, Result, bail};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to completion and returns its stdout.
///
/// # Errors
///
/// When it cannot start, exits unsuccessfully (the error quotes its stderr) or is still
/// running after `timeout` (it is killed).
pub fn output(cmd: &mut Command, timeout: Duration) -> Result<Vec<u8>> {
    run(cmd, timeout, true)
}

/// [`output`] for cleaning up: it keeps going after an interrupting signal.
pub fn output_for_cleanup(cmd: &mut Command, timeout: Duration) -> Result<Vec<u8>> {
    run(cmd, timeout, false)
}

fn run(cmd: &mut Command, timeout: Duration, interruptible: bool) -> Result<Vec<u8>> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            break status;
        }
        let interrupted = interruptible && super::interrupt::is_set();
        if interrupted || Instant::now() >= deadline {
            // Already exited or not: either way the wait below reaps it.
            let _ = child.kill();
            let _ = child.wait();
            super::interrupt::check()?;
            bail!("{what} did not finish within {} s", timeout.as_secs());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "{what} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(stdout)
}

/// Like [`output`], as text.
pub fn text(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let bytes = output(cmd, timeout)?;
    String::from_utf8(bytes).with_context(|| format!("{} printed non-UTF-8", describe(cmd)))
}

/// The command as a shell user would type it, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            // A read error leaves what was read so far, which is all a message needs.
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}
