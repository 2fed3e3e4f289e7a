//! `shoal demo`: a coordinator and N nodes on loopback, as real processes, forming a mesh through
//! seeds and an onboarding token; the coordinator announces one generated payload, every node
//! fetches it from the others, every copy is verified, and the time from the announcement is set
//! against the Kumar-Ross bound. Then a tiny service is rolled out over the nodes
//! ([`demo_rollout`](super::demo_rollout)).

use super::net::fetch_status;
use crate::failure::{Code, Failure, Outcome, WithCode};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::RngCore;
use shoal_core::units::{human_bytes, parse_rate, parse_size};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `shoal demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Nodes besides the coordinator (which is the release's origin).
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
    /// After the good release, roll out a build that fails its health check: it stops at the
    /// canary and rolls back.
    #[arg(long)]
    bad_release: bool,
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

/// The demo's operator key, in its directory; the commands it runs sign with it.
const OPERATOR_KEY: &str = "operator.key";

/// The signer for the demo's own calls to the coordinator.
pub(super) fn operator(dir: &Path) -> Result<crate::http::Signer, Failure> {
    crate::http::Signer::load(Some(&dir.join(OPERATOR_KEY)))
}

/// Runs a `shoal` subcommand in `dir` that must succeed; its output is not needed.
pub(super) fn step(exe: &Path, dir: &Path, args: &[&str]) -> Outcome {
    output(exe, dir, args).map(drop)
}

/// A loopback port PORT with UDP PORT (data plane), UDP PORT+1 (control plane) and TCP PORT
/// (API) all free.
fn free_port() -> Result<u16, Failure> {
    for _ in 0..100 {
        let udp =
            UdpSocket::bind("127.0.0.1:0").code(Code::General, || "cannot bind UDP".into())?;
        let port = udp
            .local_addr()
            .code(Code::General, || "no local address".into())?
            .port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", next)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(fail("found no free loopback port"))
}

/// Waits up to `within` for `ready`, polling.
fn wait_until(within: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Outcome {
    let deadline = Instant::now() + within;
    while !ready() {
        if Instant::now() > deadline {
            return Err(fail(format!(
                "gave up waiting {} s for {what}; the logs are in the work directory",
                within.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs a `shoal` subcommand in `dir` and returns what it printed on stdout.
pub(super) fn output(exe: &Path, dir: &Path, args: &[&str]) -> Result<String, Failure> {
    let out = Command::new(exe)
        .current_dir(dir)
        .env(
            crate::http::OPERATOR_KEY_ENV,
            std::path::absolute(dir.join(OPERATOR_KEY)).unwrap_or_else(|_| dir.join(OPERATOR_KEY)),
        )
        .args(args)
        .stderr(Stdio::piped())
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
            "keys",
            "generate",
            "--role",
            "operator",
            "--out",
            OPERATOR_KEY,
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
            "--operator",
            "operator.key.pub=admin,release,read",
            "--out",
            "trust.json",
        ],
    )?;
    super::demo_rollout::prepare(dir)?;
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

    // The mesh: a coordinator (broadcast source, admission authority, origin), an onboarding
    // token, and nodes that find each other through seeds, with no peer lists.
    let coordinator = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let signer = operator(dir)?;
    let mut children = Children(Vec::new());
    let child = Command::new(exe)
        .current_dir(dir)
        .args([
            "coordinator",
            "--data-dir",
            "coordinator",
            "--key",
            "coordinator.key",
        ])
        .args([
            "--trust",
            "trust.json",
            "--listen",
            &coordinator.to_string(),
        ])
        .args(["--upload-limit", &rate])
        .stdout(Stdio::null())
        .stderr(log(dir, "coordinator")?)
        .spawn()
        .code(Code::General, || "cannot start the coordinator".into())?;
    children.0.push(child);
    wait_until(Duration::from_secs(60), "the coordinator to answer", || {
        signer
            .get::<shoal_net::status::NodeStatus>(coordinator, shoal_net::api::STATUS_PATH)
            .is_ok()
    })?;
    let token = output(
        exe,
        dir,
        &["token", "create", "--coordinator", &coordinator.to_string()],
    )?;
    eprintln!(
        "coordinator on {coordinator}; starting {} nodes, every process capped at {}/s up and down",
        args.nodes,
        human_bytes(args.rate)
    );
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for i in 0..args.nodes {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        // Seeds: the coordinator and the first two nodes.
        let mut joins = vec![coordinator];
        joins.extend(addrs.iter().take(2));
        let mut command = Command::new(exe);
        command
            .current_dir(dir)
            .args(["node", "--data-dir", &format!("node{i}")])
            .args(["--listen", &addr.to_string(), "--token", token.trim()])
            .args([
                "--labels",
                &format!("region=r{},fd={},rack={i}", 1 + i % 2, i % 3),
            ])
            .args(["--upload-limit", &rate, "--download-limit", &rate])
            .args(["--services", "services.toml"]);
        for join in &joins {
            command.args(["--join", &join.to_string()]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log(dir, &format!("node{i}"))?)
            .spawn()
            .code(Code::General, || format!("cannot start node {i}"))?;
        children.0.push(child);
        addrs.push(addr);
    }
    let nodes = u32::try_from(args.nodes).unwrap_or(u32::MAX);
    let counted = || {
        signer
            .get::<shoal_net::mesh::FleetStatus>(coordinator, shoal_net::api::FLEET_PATH)
            .is_ok_and(|f| f.nodes == nodes)
    };
    wait_until(
        Duration::from_secs(120),
        "every node to join the mesh",
        counted,
    )?;
    eprintln!("all {} nodes joined; announcing the release", args.nodes);

    let started = Instant::now();
    output(
        exe,
        dir,
        &[
            "announce",
            "demo.manifest",
            "--file",
            "payload.bin",
            "--coordinator",
            &coordinator.to_string(),
        ],
    )?;
    let multi = if std::io::stderr().is_terminal() {
        MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    };
    let bars: Vec<ProgressBar> = (0..args.nodes)
        .map(|i| bar(&multi, u64::from(pieces), format!("node{i}")))
        .collect();
    let mut results: Vec<Option<(f64, String)>> = vec![None; args.nodes];
    let limit = Duration::from_secs(600);
    while results.iter().any(Option::is_none) {
        if started.elapsed() > limit {
            return Err(fail("the release did not reach every node within 600 s"));
        }
        for (i, addr) in addrs.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let Ok(status) = fetch_status(*addr) else {
                continue;
            };
            let Some(r) = status.releases.iter().find(|r| r.root == root) else {
                continue;
            };
            bars[i].set_position(u64::from(r.have));
            if r.complete {
                let secs = started.elapsed().as_secs_f64();
                bars[i].finish();
                if !std::io::stderr().is_terminal() {
                    eprintln!("node{i} done after {secs:.2} s");
                }
                results[i] = Some((secs, r.path.clone()));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let origin_status = signer
        .get::<shoal_net::status::NodeStatus>(coordinator, shoal_net::api::STATUS_PATH)
        .ok();
    // Health climbs the broadcast tree once a second per level: give the count time to settle.
    let fleet_complete = || {
        signer
            .get::<shoal_net::mesh::FleetStatus>(coordinator, shoal_net::api::FLEET_PATH)
            .ok()
            .and_then(|f| f.releases.into_iter().find(|r| r.root.to_hex() == root))
            .map_or(0, |r| r.complete)
    };
    let settled = Instant::now() + Duration::from_secs(30);
    let mut complete = fleet_complete();
    while complete < nodes && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(200));
        complete = fleet_complete();
    }

    // Verify every copy against the root, as b3sum would.
    let mut last = 0.0f64;
    for (i, result) in results.iter().enumerate() {
        let Some((secs, path)) = result else {
            continue;
        };
        last = last.max(*secs);
        let path = dir.join(path);
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
    let rate = args.rate as f64;
    let bound = shoal_core::swarm::bound::kumar_ross_secs(
        args.size,
        u32::try_from(args.nodes).unwrap_or(u32::MAX),
        rate,
        rate,
    );
    println!("all {} copies verified: BLAKE3 root {root}", args.nodes);
    println!(
        "last node done after {last:.2} s; Kumar-Ross bound {bound:.2} s ({:.2}x)",
        last / bound
    );
    println!(
        "the coordinator's fleet summary counts the release complete on {complete} of {} nodes",
        args.nodes
    );
    if let Some(s) = origin_status.and_then(|s| s.releases.into_iter().next()) {
        println!(
            "origin sent {} ({:.2} copies of the payload)",
            human_bytes(s.bytes_up),
            s.bytes_up as f64 / args.size.max(1) as f64
        );
    }
    let _ = std::io::stdout().flush();
    super::demo_rollout::run(exe, dir, coordinator, &addrs, args.bad_release)?;
    drop(children);
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
