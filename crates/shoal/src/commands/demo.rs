//! `shoal demo`: an origin and N nodes on loopback, as real processes, distributing one
//! generated payload; every copy is verified and the time is set against the Kumar-Ross bound.

use super::net::fetch_status;
use crate::failure::{Code, Failure, Outcome, WithCode};
use crate::units::{human_bytes, parse_rate, parse_size};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::RngCore;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `shoal demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Receiving nodes besides the origin.
    #[arg(long, default_value_t = 8, value_name = "N")]
    nodes: usize,
    /// Payload size, e.g. 256MiB.
    #[arg(long, default_value = "128MiB", value_name = "BYTES", value_parser = parse_size)]
    size: u64,
    /// Upload and download cap of every process, so the Kumar-Ross bound is defined.
    #[arg(long, default_value = "200mbit", value_name = "RATE", value_parser = parse_rate)]
    rate: u64,
    /// Work directory (default: a new directory under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the work directory afterwards.
    #[arg(long)]
    keep: bool,
}

/// Child processes, stopped when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: kill(2) on a pid we spawned and have not yet waited for.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for child in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fail(what: impl Into<String>) -> Failure {
    Failure::new(Code::General, what)
}

fn step(exe: &Path, dir: &Path, args: &[&str]) -> Outcome {
    let out = Command::new(exe)
        .args(args)
        .current_dir(dir)
        .output()
        .code(Code::General, || {
            format!("cannot run shoal {}", args.join(" "))
        })?;
    if !out.status.success() {
        return Err(fail(format!(
            "shoal {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A loopback port free on both UDP and TCP.
fn free_port() -> Result<u16, Failure> {
    for _ in 0..100 {
        let udp =
            UdpSocket::bind("127.0.0.1:0").code(Code::General, || "cannot bind UDP".into())?;
        let port = udp
            .local_addr()
            .code(Code::General, || "no local address".into())?
            .port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(fail("found no free loopback port"))
}

fn bar(multi: &MultiProgress, len: u64, label: String) -> ProgressBar {
    let bar = multi.add(ProgressBar::new(len));
    let style = ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} pieces {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label);
    bar
}

pub fn run(args: DemoArgs) -> Outcome {
    if args.nodes == 0 {
        return Err(Failure::new(Code::Usage, "--nodes must be at least 1"));
    }
    let exe =
        std::env::current_exe().code(Code::General, || "cannot find the shoal binary".into())?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("shoal-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir)
        .code(Code::General, || format!("cannot create {}", dir.display()))?;
    let result = run_in(&args, &exe, &dir);
    if args.keep || result.is_err() {
        eprintln!("work directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(args: &DemoArgs, exe: &Path, dir: &Path) -> Outcome {
    eprintln!("work directory: {}", dir.display());
    // Keys, trust and a signed release, exactly as a publisher makes them.
    step(
        exe,
        dir,
        &[
            "keys", "generate", "--role", "root", "--out", "root.key", "--force",
        ],
    )?;
    step(
        exe,
        dir,
        &[
            "keys",
            "generate",
            "--role",
            "publisher",
            "--out",
            "publisher.key",
            "--force",
        ],
    )?;
    step(
        exe,
        dir,
        &[
            "keys",
            "generate",
            "--role",
            "coordinator",
            "--out",
            "coordinator.key",
            "--force",
        ],
    )?;
    step(
        exe,
        dir,
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
    )?;
    eprintln!("generating a {} payload", human_bytes(args.size));
    write_payload(&dir.join("payload.bin"), args.size)?;
    step(
        exe,
        dir,
        &[
            "release",
            "create",
            "payload.bin",
            "--service",
            "demo",
            "--version",
            "1.0.0",
            "--key",
            "publisher.key",
            "--out",
            "demo.manifest",
        ],
    )?;

    let trust = super::trust::load(&dir.join("trust.json"))?;
    let manifest = super::release::load_manifest(&dir.join("demo.manifest"), &trust)?;
    let root = manifest.root().to_hex();
    let pieces = manifest.layout().piece_count();
    let rate = args.rate.to_string();

    let origin_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut children = Children(Vec::new());
    let origin = Command::new(exe)
        .current_dir(dir)
        .args([
            "seed",
            "demo.manifest",
            "--file",
            "payload.bin",
            "--trust",
            "trust.json",
            "--data-dir",
            "origin",
        ])
        .args([
            "--listen",
            &origin_addr.to_string(),
            "--upload-limit",
            &rate,
        ])
        .stdout(Stdio::null())
        .stderr(log(dir, "origin")?)
        .spawn()
        .code(Code::General, || "cannot start the origin".into())?;
    children.0.push(origin);
    let deadline = Instant::now() + Duration::from_secs(60);
    while fetch_status(origin_addr).is_err() {
        if Instant::now() > deadline {
            return Err(fail(format!(
                "the origin did not start on {origin_addr} within 60 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "origin on {origin_addr}; starting {} nodes, every process capped at {}/s up and down",
        args.nodes,
        human_bytes(args.rate)
    );

    let started = Instant::now();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Instant, String)>();
    let mut addrs = Vec::new();
    for i in 0..args.nodes {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut child = Command::new(exe)
            .current_dir(dir)
            .args([
                "fetch",
                "demo.manifest",
                "--trust",
                "trust.json",
                "--data-dir",
                &format!("node{i}"),
            ])
            .args([
                "--listen",
                &addr.to_string(),
                "--peer",
                &origin_addr.to_string(),
            ])
            .args([
                "--upload-limit",
                &rate,
                "--download-limit",
                &rate,
                "--seed-secs",
                "3600",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(log(dir, &format!("node{i}"))?)
            .spawn()
            .code(Code::General, || format!("cannot start node {i}"))?;
        let stdout = child.stdout.take().ok_or_else(|| fail("no stdout"))?;
        let tx = done_tx.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send((i, Instant::now(), line));
            }
        });
        children.0.push(child);
        addrs.push(addr);
    }
    drop(done_tx);

    let multi = if std::io::stderr().is_terminal() {
        MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    };
    let bars: Vec<ProgressBar> = (0..args.nodes)
        .map(|i| bar(&multi, u64::from(pieces), format!("node{i}")))
        .collect();
    let mut results: Vec<Option<(f64, serde_json::Value)>> = vec![None; args.nodes];
    let limit = Duration::from_secs(600);
    while results.iter().any(Option::is_none) {
        if started.elapsed() > limit {
            return Err(fail("the demo did not finish within 600 s"));
        }
        while let Ok((i, at, line)) = done_rx.try_recv() {
            let value: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| fail(format!("node{i} printed {line:?}: {e}")))?;
            if value["ok"] != serde_json::Value::Bool(true) {
                return Err(fail(format!("node{i} failed: {line}")));
            }
            bars[i].set_position(u64::from(pieces));
            bars[i].finish();
            if !std::io::stderr().is_terminal() {
                eprintln!("node{i} done after {:.2} s", (at - started).as_secs_f64());
            }
            results[i] = Some(((at - started).as_secs_f64(), value));
        }
        for (i, addr) in addrs.iter().enumerate() {
            if results[i].is_none()
                && let Ok(status) = fetch_status(*addr)
                && let Some(r) = status.releases.first()
            {
                bars[i].set_position(u64::from(r.have));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let origin_status = fetch_status(origin_addr).ok();
    drop(children);

    // Verify every copy against the root, as b3sum would.
    let mut last = 0.0f64;
    for (i, result) in results.iter().enumerate() {
        let Some((secs, value)) = result else {
            continue;
        };
        last = last.max(*secs);
        let path = dir.join(
            value["path"]
                .as_str()
                .ok_or_else(|| fail("no path in fetch output"))?,
        );
        let file =
            File::open(&path).code(Code::General, || format!("cannot open {}", path.display()))?;
        let hashed = shoal_store::hashing::hash_file(
            &file,
            manifest.layout(),
            shoal_store::hashing::default_threads(),
            &|_| {},
        )
        .code(Code::General, || format!("cannot read {}", path.display()))?;
        if hashed.root.to_hex() != root {
            return Err(Failure::new(
                Code::FileMismatch,
                format!("node{i}'s copy hashes to {} instead of {root}", hashed.root),
            ));
        }
    }
    let bits = args.size as f64 * 8.0;
    let rate_bits = args.rate as f64 * 8.0;
    let n = args.nodes as f64;
    // Kumar-Ross: max(S/u_origin, S/d_min, N*S/(u_origin + sum of u_i)) with equal caps.
    let bound = (bits / rate_bits).max(n * bits / ((n + 1.0) * rate_bits));
    println!("all {} copies verified: BLAKE3 root {root}", args.nodes);
    println!(
        "last node done after {last:.2} s; Kumar-Ross bound {bound:.2} s ({:.2}x)",
        last / bound
    );
    if let Some(s) = origin_status.and_then(|s| s.releases.into_iter().next()) {
        println!(
            "origin sent {} ({:.2} copies of the payload)",
            human_bytes(s.bytes_up),
            s.bytes_up as f64 / args.size.max(1) as f64
        );
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// A process's log file in the work directory (`SHOAL_LOG=debug` makes it talkative).
fn log(dir: &Path, name: &str) -> Result<File, Failure> {
    let path = dir.join(format!("{name}.log"));
    File::create(&path).code(Code::General, || {
        format!("cannot create {}", path.display())
    })
}

fn write_payload(path: &Path, size: u64) -> Outcome {
    let mut file = File::create(path).code(Code::General, || {
        format!("cannot create {}", path.display())
    })?;
    let mut rng = rand::rng();
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        rng.fill_bytes(&mut block[..n]);
        file.write_all(&block[..n])
            .code(Code::General, || format!("cannot write {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}
