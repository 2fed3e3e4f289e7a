//! BitTorrent: opentracker and an aria2 seeder on the origin, aria2 on every receiver.

use super::*;

const TRACKER_PORT: u16 = 6969;
const TORRENT_PORT: u16 = 6881;

/// aria2 runs this once a receiver has every piece (before it goes on seeding), with the
/// GID, the file count and the first file's path. It writes the time under another name and
/// renames it, so the harness never reads half a marker.
const HOOK: &str = "#!/bin/sh\n\
    # Written by benches/swarm/main.rs: marks a completed BitTorrent download with the time.\n\
    date +%s.%N > \"$3.done.tmp\" && mv \"$3.done.tmp\" \"$3.done\"\n";

/// What the aria2 seeder and receivers share. DHT and local peer discovery are off, so
/// peers come from the tracker (and peer exchange). `--seed-ratio=0.0` without
/// `--seed-time` seeds until stopped: the harness stops every node once all are complete.
fn aria2_args() -> Args {
    Args::new(
        "--no-conf=true --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
         --bt-max-peers=55 --file-allocation=none --summary-interval=0 \
         --console-log-level=warn --seed-ratio=0.0",
    )
    .opt("--listen-port", TORRENT_PORT.to_string())
}

pub fn run(bench: &Bench<'_>, dir: &Path) -> Result<SystemRun> {
    let payload_dir = bench
        .payload
        .parent()
        .context("the payload has no directory")?;
    let name = bench
        .payload
        .file_name()
        .and_then(|n| n.to_str())
        .context("the payload has no UTF-8 file name")?;
    let origin_ip = bench.ip_of(0);
    let tracker_addr = format!("{origin_ip}:{TRACKER_PORT}");
    let announce = format!("http://{tracker_addr}/announce");

    // The torrent, with the same piece size as Shoal's manifest.
    let torrent = dir.join("payload.torrent");
    let exponent = bench.config.piece_bytes().trailing_zeros().to_string();
    exec::output(
        Command::new(bench.tools.get("mktorrent"))
            .args(["-a", &announce, "-l", &exponent, "-o"])
            .arg(&torrent)
            .arg(bench.payload),
        PREPARE_TIMEOUT,
    )?;
    let shown = exec::text(
        Command::new(bench.tools.get("aria2c"))
            .arg("-S")
            .arg(&torrent),
        PREPARE_TIMEOUT,
    )?;
    let info_hash = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("Info Hash:"))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("aria2c -S printed no info hash: {shown}"))?;
    let escaped_hash: String = (0..20)
        .map(|i| format!("%{}", &info_hash[2 * i..2 * i + 2]))
        .collect();

    // Debian's opentracker serves only whitelisted torrents, refuses to run as root, and
    // chroots into its `-d` directory, where it then reads the whitelist: give it a
    // world-readable one.
    let tracker_dir = dir.join("tracker");
    std::fs::create_dir(&tracker_dir)
        .with_context(|| format!("cannot create {}", tracker_dir.display()))?;
    std::fs::write(tracker_dir.join("whitelist.txt"), format!("{info_hash}\n"))
        .context("cannot write the tracker whitelist")?;
    set_mode(&tracker_dir, 0o755)?;
    set_mode(&tracker_dir.join("whitelist.txt"), 0o644)?;

    let hook = dir.join("complete-hook.sh");
    std::fs::write(&hook, HOOK).with_context(|| format!("cannot write {}", hook.display()))?;
    set_mode(&hook, 0o755)?;
    create_receiver_dirs(bench, dir)?;

    let mut procs = Procs::new(bench.tools.get("ip"), &dir.join("logs"))?;
    let tracker = procs.spawn(
        bench.netns(0),
        "opentracker (origin)",
        bench.tools.get("opentracker"),
        Args::default()
            .opt("-i", &origin_ip)
            .opt("-p", TRACKER_PORT.to_string())
            .opt("-P", TRACKER_PORT.to_string())
            .opt("-d", &tracker_dir)
            .opt("-u", "nobody")
            .opt("-w", "whitelist.txt"),
        false,
    )?;
    let ss = bench.tools.get("ss");
    bench
        .swarm
        .wait_listening(ss, 0, &tracker_addr, ORIGIN_START_TIMEOUT, || {
            procs.check_running(tracker)
        })?;
    // The whitelist loads in the background: wait until an announce is accepted. The probe
    // says it stopped, so the tracker lists no peer for it.
    let probe = format!(
        "{announce}?info_hash={escaped_hash}&peer_id=-SB0000-000000000000&port=1&uploaded=0&downloaded=0&left=0&event=stopped&compact=1"
    );
    poll_tracker(bench, &mut procs, tracker, &probe, |body| {
        !body.contains("failure reason")
    })?;

    let seeder = procs.spawn(
        bench.netns(0),
        "aria2c seeder (origin)",
        bench.tools.get("aria2c"),
        aria2_args()
            .words("--check-integrity=true --bt-seed-unverified=true")
            .opt("--dir", payload_dir)
            .arg(&torrent),
        false,
    )?;
    // Seeding once the tracker counts one complete peer.
    let scrape = format!("http://{tracker_addr}/scrape?info_hash={escaped_hash}");
    poll_tracker(bench, &mut procs, seeder, &scrape, |body| {
        body.contains("8:completei1e")
    })?;
    procs.check_running(tracker)?;

    let tx_before = bench.swarm.tx_bytes(0)?;
    let start = now();
    let mut receivers = Vec::new();
    let mut paths = Vec::new();
    let mut markers = Vec::new();
    for host in 1..bench.config.hosts {
        let data = receiver_dir(dir, host);
        let args = aria2_args()
            .arg("--allow-overwrite=true")
            .opt("--on-bt-download-complete", &hook)
            .opt("--dir", &data)
            .arg(&torrent);
        let label = format!("aria2c (receiver {host})");
        receivers.push(procs.spawn(
            bench.netns(host),
            &label,
            bench.tools.get("aria2c"),
            args,
            false,
        )?);
        paths.push(data.join(name));
        markers.push(data.join(format!("{name}.done")));
    }
    let waited = wait_receivers(
        bench,
        &mut procs,
        &receivers,
        &[tracker, seeder],
        &Done::Marker(markers),
        start,
        tx_before,
    )?;
    // aria2 writes its cache out when it stops, so verify after stopping.
    procs.stop_all()?;
    files::verify_all(bench.tools, &paths, bench.payload_root)?;
    Ok(SystemRun {
        completion_secs: waited.completion_secs,
        origin_sent_bytes: waited.origin_sent_bytes,
        origin: procs.usage(seeder).unwrap_or_default(),
        tracker: procs.usage(tracker),
        receivers: usages(&procs, &receivers),
    })
}

/// Fetches `url` with curl in the origin namespace until `ok` accepts the body, while
/// process `id` keeps running.
fn poll_tracker(
    bench: &Bench<'_>,
    procs: &mut Procs,
    id: usize,
    url: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + ORIGIN_START_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        procs.check_running(id)?;
        let body = exec::output(
            Command::new(bench.tools.get("ip"))
                .args(["netns", "exec", bench.netns(0)])
                .arg(bench.tools.get("curl"))
                .args(["-sS", "--max-time", "5", url]),
            Duration::from_secs(10),
        );
        match body {
            Ok(b) => {
                last = String::from_utf8_lossy(&b).into_owned();
                if ok(&last) {
                    return Ok(());
                }
            }
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the tracker did not get ready within {} s; last answer to {url}: {last:?}",
        ORIGIN_START_TIMEOUT.as_secs()
    )
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}
