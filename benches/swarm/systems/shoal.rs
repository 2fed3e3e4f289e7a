//! Shoal: `shoal seed` on the origin, `shoal fetch --json` on every receiver.

use super::*;

/// The keys, trust document and manifest for a payload, made as `scripts/demo` makes them.
pub struct Release {
    /// The signed manifest.
    pub manifest: PathBuf,
    /// The trust document.
    pub trust: PathBuf,
}

/// Makes keys, a trust document and a manifest of `payload` in `dir`, and checks that the
/// manifest's root is `b3sum`'s.
///
/// # Errors
///
/// The `shoal` command that failed, or a root mismatch.
pub fn shoal_release(bench: &Bench<'_>, dir: &Path, payload: &Path, root: &str) -> Result<Release> {
    let shoal = Path::new(env!("CARGO_BIN_EXE_shoal"));
    for sub in ["seed", "fetch"] {
        let help = exec::output(Command::new(shoal).args([sub, "--help"]), PREPARE_TIMEOUT);
        if let Err(e) = help {
            bail!("{} has no working `{sub}` command: {e:#}", shoal.display());
        }
    }
    let run = |args: Args| -> Result<String> {
        exec::text(
            Command::new(shoal).current_dir(dir).args(args),
            PREPARE_TIMEOUT,
        )
    };
    for role in ["root", "publisher", "coordinator"] {
        run(Args::new("keys generate")
            .opt("--role", role)
            .opt("--out", format!("{role}.key")))?;
    }
    run(Args::new("trust init")
        .opt("--root", "root.key")
        .opt("--publisher", "publisher.key.pub")
        .opt("--coordinator", "coordinator.key.pub")
        .opt("--out", "trust.json"))?;
    let out = run(Args::new("release create")
        .arg(payload)
        .opt("--service", "bench")
        .opt("--version", "1")
        .opt("--key", "publisher.key")
        .opt("--piece-size", bench.config.piece_bytes().to_string())
        .opt("--out", "bench.manifest")
        .arg("--json"))?;
    let summary: serde_json::Value = serde_json::from_str(&out)
        .context("shoal release create --json printed something that is not JSON")?;
    let manifest_root = summary["root"].as_str().unwrap_or_default();
    ensure!(
        manifest_root == root,
        "the manifest's root {manifest_root:?} is not the payload's BLAKE3 {root}"
    );
    Ok(Release {
        manifest: dir.join("bench.manifest"),
        trust: dir.join("trust.json"),
    })
}

/// The `--listen` port of every Shoal node.
const SHOAL_PORT: u16 = 7070;

pub fn run(bench: &Bench<'_>, dir: &Path) -> Result<SystemRun> {
    let shoal = Path::new(env!("CARGO_BIN_EXE_shoal"));
    let release = shoal_release(bench, dir, bench.payload, bench.payload_root)?;
    create_receiver_dirs(bench, dir)?;
    let mut procs = Procs::new(bench.tools.get("ip"), &dir.join("logs"))?;
    let origin_data = dir.join("origin-data");
    let listen = format!("{}:{SHOAL_PORT}", bench.ip_of(0));
    let seed = procs.spawn(
        bench.netns(0),
        "shoal seed (origin)",
        shoal,
        Args::new("seed")
            .arg(&release.manifest)
            .opt("--file", bench.payload)
            .opt("--trust", &release.trust)
            .opt("--data-dir", &origin_data)
            .opt("--listen", &listen)
            .opt("--congestion", crate::congestion()),
        false,
    )?;
    bench.swarm.wait_listening(
        bench.tools.get("ss"),
        0,
        &listen,
        ORIGIN_START_TIMEOUT,
        || procs.check_running(seed),
    )?;

    // Receivers keep serving until the harness stops them once all are complete.
    let seed_secs = format!("{:.0}", bench.deadline_secs() + 60.0);
    let addrs: Vec<String> = (0..bench.config.hosts)
        .map(|h| format!("{}:{SHOAL_PORT}", bench.ip_of(h)))
        .collect();
    let tx_before = bench.swarm.tx_bytes(0)?;
    let start = now();
    let mut receivers = Vec::new();
    for host in 1..bench.config.hosts {
        let data = receiver_dir(dir, host);
        let mut args = Args::new("fetch")
            .arg(&release.manifest)
            .opt("--trust", &release.trust)
            .opt("--data-dir", &data)
            .opt("--listen", &addrs[host]);
        for (other, addr) in addrs.iter().enumerate() {
            if other != host {
                args = args.opt("--peer", addr);
            }
        }
        let args = args
            .opt("--seed-secs", &seed_secs)
            .opt("--congestion", crate::congestion())
            .arg("--json");
        let label = format!("shoal fetch (receiver {host})");
        receivers.push(procs.spawn(bench.netns(host), &label, shoal, args, true)?);
    }
    let waited = wait_receivers(
        bench,
        &mut procs,
        &receivers,
        &[seed],
        &Done::Json,
        start,
        tx_before,
    )?;
    origin_transport_summary(bench, shoal, &listen);
    procs.stop_all()?;

    let sum = |field: &str| -> u64 {
        waited
            .json
            .iter()
            .flatten()
            .filter_map(|v| v[field].as_u64())
            .sum()
    };
    println!(
        "receivers: {} endgame requests, {} requests to the origin withdrawn, {} declined by the origin as on their way elsewhere",
        sum("endgame_requests"),
        sum("origin_spared"),
        sum("sent_elsewhere")
    );
    let mut paths = Vec::new();
    for (value, &id) in waited.json.iter().zip(&receivers) {
        let value = value.as_ref().context("a receiver has no JSON")?;
        let root = value["root"].as_str().unwrap_or_default();
        ensure!(
            root == bench.payload_root,
            "{} reports root {root:?}, not {}",
            procs.label(id),
            bench.payload_root
        );
        let path = value["path"]
            .as_str()
            .with_context(|| format!("{} printed no path: {value}", procs.label(id)))?;
        paths.push(PathBuf::from(path));
    }
    files::verify_all(bench.tools, &paths, bench.payload_root)?;
    Ok(SystemRun {
        completion_secs: waited.completion_secs,
        origin_sent_bytes: waited.origin_sent_bytes,
        origin: procs.usage(seed).unwrap_or_default(),
        tracker: None,
        receivers: usages(&procs, &receivers),
    })
}

/// Prints what the origin's own counters say: application bytes sent, and the UDP bytes,
/// losses and congestion events QUIC counted on its connections.
fn origin_transport_summary(bench: &Bench<'_>, shoal: &Path, listen: &str) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", bench.netns(0)])
        .arg(shoal)
        .args(["status", "--node", listen, "--json"])
        .output();
    let Ok(out) = out else { return };
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return;
    };
    let sum = |field: &str| -> u64 {
        status["connections"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c[field].as_u64()).sum())
            .unwrap_or(0)
    };
    let app = status["releases"][0]["bytes_up"].as_u64().unwrap_or(0);
    let release = |field: &str| status["releases"][0][field].as_u64().unwrap_or(0);
    println!(
        "origin: {} pieces sent again, {} requests declined as on their way to another peer",
        release("pieces_resent"),
        release("declined_sent_elsewhere")
    );
    println!(
        "origin's own count: {} of pieces sent; QUIC sent {} in UDP payloads ({:.1} datagrams per send call), declared {} lost, {} congestion events (connections still open)",
        crate::units::mib(app),
        crate::units::mib(sum("udp_sent_bytes")),
        sum("udp_sent_datagrams") as f64 / sum("udp_send_calls").max(1) as f64,
        crate::units::mib(sum("lost_bytes")),
        sum("congestion_events")
    );
}
