//! The emulated network: one namespace per host, a veth pair from each into a shared bridge,
//! and a `tbf` qdisc on both ends of every pair.

use super::config::Rate;
use super::exec;
use super::setup::Tools;
use anyhow::{Context as _, Result, bail};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long one `ip`, `tc` or `ss` call may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The interface name inside every host's namespace.
pub const HOST_IF: &str = "eth0";

/// The most a tbf queue delays a packet before dropping it: a 50 ms buffer, about what a
/// broadband link's bottleneck queue holds, so TCP sees a realistic amount of buffering.
pub const TBF_LATENCY_MS: u64 = 50;

/// tbf's bucket: 10 ms of traffic at the link rate, and at least 128 KiB. A bucket must hold
/// the largest packet it passes, and veth hands over GSO packets of up to 64 KiB; 10 ms keeps
/// the shaping smooth at kernel timer granularity (HZ=250 is a 4 ms tick) without letting
/// bursts much above the rate through.
pub fn tbf_burst_bytes(rate: Rate) -> u64 {
    ((rate.bytes_per_sec() / 100.0) as u64).max(128 << 10)
}

/// One emulated host.
pub struct Host {
    /// Its network namespace.
    pub netns: String,
    /// The bridge-side end of its veth pair, in the root namespace.
    pub outer_if: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// The hosts and their bridge. Dropping it deletes them, killing what still runs inside.
pub struct Swarm {
    ip: PathBuf,
    bridge: String,
    /// Host 0 is the origin.
    pub hosts: Vec<Host>,
}

/// Names start with this and the process id, so a run finds what a crashed run left.
const PREFIX: &str = "shb";

impl Swarm {
    /// Builds `hosts` namespaces on one bridge with every link capped at `rate` each way.
    ///
    /// # Errors
    ///
    /// The `ip` or `tc` command that failed; what was built so far is removed.
    pub fn build(tools: &Tools, hosts: usize, rate: Rate) -> Result<Swarm> {
        let pid = std::process::id();
        let mut swarm = Swarm {
            ip: tools.get("ip").to_path_buf(),
            bridge: format!("{PREFIX}{pid}br"),
            hosts: Vec::new(),
        };
        let ip = tools.get("ip");
        let tc = tools.get("tc");
        let run = |args: &[&str], program: &std::path::Path| -> Result<()> {
            exec::output(Command::new(program).args(args), COMMAND_TIMEOUT).map(|_| ())
        };
        run(&["link", "add", &swarm.bridge, "type", "bridge"], ip)?;
        run(&["link", "set", &swarm.bridge, "up"], ip)?;
        let rate_arg = rate.tc_arg();
        let burst = format!("{}b", tbf_burst_bytes(rate));
        let latency = format!("{TBF_LATENCY_MS}ms");
        let tbf = [
            "root", "tbf", "rate", &rate_arg, "burst", &burst, "latency", &latency,
        ];
        for i in 0..hosts {
            let octet = u8::try_from(i + 1).context("too many hosts")?;
            let host = Host {
                netns: format!("{PREFIX}-{pid}-{i}"),
                outer_if: format!("{PREFIX}{pid}v{i}"),
                ip: Ipv4Addr::new(10, 77, 0, octet),
            };
            run(&["netns", "add", &host.netns], ip)?;
            let (ns, outer) = (host.netns.clone(), host.outer_if.clone());
            swarm.hosts.push(host);
            let cidr = format!("10.77.0.{octet}/16");
            run(
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", HOST_IF, "netns", &ns,
                ],
                ip,
            )?;
            run(&["link", "set", &outer, "master", &swarm.bridge, "up"], ip)?;
            run(&["-n", &ns, "addr", "add", &cidr, "dev", HOST_IF], ip)?;
            run(&["-n", &ns, "link", "set", HOST_IF, "up"], ip)?;
            run(&["-n", &ns, "link", "set", "lo", "up"], ip)?;
            // Upload: what leaves the host. Download: what the bridge sends to the host.
            let mut upload = vec!["-n", &ns, "qdisc", "add", "dev", HOST_IF];
            upload.extend_from_slice(&tbf);
            run(&upload, tc)?;
            let mut download = vec!["qdisc", "add", "dev", &outer];
            download.extend_from_slice(&tbf);
            run(&download, tc)?;
        }
        Ok(swarm)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Bytes host `i` has sent on its link so far: `tx_bytes` of its namespace-side veth,
    /// which counts what left the tbf queue, with a GSO packet's headers counted once.
    ///
    /// # Errors
    ///
    /// When `ip` fails or prints something unexpected.
    pub fn tx_bytes(&self, i: usize) -> Result<u64> {
        let host = &self.hosts[i];
        let out = exec::output(
            Command::new(&self.ip).args([
                "-j",
                "-s",
                "-n",
                &host.netns,
                "link",
                "show",
                "dev",
                HOST_IF,
            ]),
            COMMAND_TIMEOUT,
        )?;
        let value: serde_json::Value =
            serde_json::from_slice(&out).context("ip -j printed something that is not JSON")?;
        value[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .with_context(|| format!("no tx byte count for {} in {}", host.netns, value))
    }

    /// Waits until something in host `i`'s namespace listens on `addr` (`IP:PORT`, TCP or
    /// UDP), as long as `alive` says the server is still running.
    ///
    /// # Errors
    ///
    /// When `alive` fails, or nothing listens after `timeout`.
    pub fn wait_listening(
        &self,
        ss: &std::path::Path,
        i: usize,
        addr: &str,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            super::interrupt::check()?;
            alive()?;
            let out = exec::text(
                Command::new(&self.ip)
                    .args(["netns", "exec", &self.hosts[i].netns])
                    .arg(ss)
                    .arg("-Hlntu"),
                COMMAND_TIMEOUT,
            )?;
            if out.lines().any(|l| l.split_whitespace().any(|f| f == addr)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nothing listens on {addr} after {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn teardown(&mut self) {
        for host in self.hosts.drain(..) {
            kill_inside(&self.ip, &host.netns);
            if let Err(e) = exec::output_for_cleanup(
                Command::new(&self.ip).args(["netns", "del", &host.netns]),
                COMMAND_TIMEOUT,
            ) {
                eprintln!("warning: {e:#}");
            }
        }
        if let Err(e) = exec::output_for_cleanup(
            Command::new(&self.ip).args(["link", "del", &self.bridge]),
            COMMAND_TIMEOUT,
        ) {
            eprintln!("warning: {e:#}");
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Kills whatever still runs in `netns`: only processes this benchmark started live there.
fn kill_inside(ip: &std::path::Path, netns: &str) {
    let Ok(pids) = exec::output_for_cleanup(
        Command::new(ip).args(["netns", "pids", netns]),
        COMMAND_TIMEOUT,
    ) else {
        return;
    };
    for pid in String::from_utf8_lossy(&pids)
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
    {
        eprintln!("warning: killing process {pid}, left running in {netns}");
        // SAFETY: kill has no memory preconditions; pid is a process in our namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Removes namespaces, bridges and veths that an earlier run, no longer alive, left behind.
pub fn remove_stale(tools: &Tools) {
    let ip = tools.get("ip");
    let is_stale = |pid: &str| {
        pid.parse::<u32>().is_ok_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
    };
    if let Ok(list) =
        exec::output_for_cleanup(Command::new(ip).args(["netns", "list"]), COMMAND_TIMEOUT)
    {
        for name in String::from_utf8_lossy(&list)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                continue;
            };
            if rest.split_once('-').is_some_and(|(pid, _)| is_stale(pid)) {
                eprintln!("removing namespace {name} left by an earlier run");
                kill_inside(ip, name);
                if let Err(e) = exec::output_for_cleanup(
                    Command::new(ip).args(["netns", "del", name]),
                    COMMAND_TIMEOUT,
                ) {
                    eprintln!("warning: {e:#}");
                }
            }
        }
    }
    if let Ok(list) = exec::output_for_cleanup(
        Command::new(ip).args(["-j", "link", "show"]),
        COMMAND_TIMEOUT,
    ) {
        let links: Vec<serde_json::Value> = serde_json::from_slice(&list).unwrap_or_default();
        for link in links {
            let Some(name) = link["ifname"].as_str() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let kind = &rest[pid.len()..];
            let ours = kind == "br"
                || kind
                    .strip_prefix('v')
                    .is_some_and(|n| n.parse::<u32>().is_ok());
            if ours && is_stale(&pid) {
                eprintln!("removing interface {name} left by an earlier run");
                if let Err(e) = exec::output_for_cleanup(
                    Command::new(ip).args(["link", "del", name]),
                    COMMAND_TIMEOUT,
                ) {
                    eprintln!("warning: {e:#}");
                }
            }
        }
    }
}
