//! A network partition and its healing, with real processes in network namespaces (root only).
//!
//! The network: two Linux bridges joined by one veth pair (the "link"). Group A (the
//! coordinator and five nodes) hangs off bridge A, group B (six nodes) off bridge B; every
//! process has its own namespace with one veth into its group's bridge, all in one /24. Taking
//! one end of the link down cuts the groups apart; bringing it up heals the cut. Every `shoal`
//! command for a process runs inside its namespace with `ip netns exec`.
//!
//! Names start with `shp` and this test process's id, so a later run removes what a crashed run
//! left (the same scheme as benches/swarm/main.rs, with its own prefix).
#![allow(clippy::unwrap_used)]

#[path = "support/mesh.rs"]
mod harness;

use harness::{Mesh, Work, report, run_ok};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

/// Every process listens on this port of its own namespace's address.
const PORT: u16 = 7000;

/// Processes in group A (the coordinator is host 0) and in group B.
const GROUP_A: usize = 6;
const GROUP_B: usize = 6;

/// How long the mesh has, from its last node's start, to fill every view and be counted.
/// Twelve members on two cores settle faster than the fifty of tests/mesh.rs.
const FULL_VIEW_WITHIN: Duration = Duration::from_secs(60);

/// How long the cut is held before the announcement: the scenario, not a guess at speed. It is
/// longer than failure detection (a few seconds) and than `stale_after` (15 s), so each side
/// has noticed the cut and tried to rejoin through its seeds.
const PARTITION_HOLD: Duration = Duration::from_secs(30);

/// How long a small release has, from `shoal announce`, to be complete where it can go.
const RELEASE_WITHIN: Duration = Duration::from_secs(60);

/// Once group A has the release, how long group B is watched not to get it.
const ABSENCE_HOLD: Duration = Duration::from_secs(5);

/// How long, from restoring the link, until the overlay is one component again. A cut-off side
/// hears no heartbeat (every 5 s) for `stale_after` (15 s), then rejoins through a seed of the
/// other side; seeds that stayed unreachable are retried with back-off of at most 10 s.
const HEAL_WITHIN: Duration = Duration::from_secs(60);

/// A small release: only the control plane's behaviour matters here.
const RELEASE_BYTES: usize = 1 << 20;

/// How long one `ip` call may take.
const IP_TIMEOUT: Duration = Duration::from_secs(30);

/// The prefix of every namespace and interface this test makes.
const PREFIX: &str = "shp";

/// Runs `ip ARGS`.
///
/// # Errors
///
/// When it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let what = harness::describe(&cmd);
    let out = harness::run_with_timeout(cmd, IP_TIMEOUT)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One process's namespace.
struct Host {
    netns: String,
    /// The bridge-side end of its veth, in the root namespace.
    outer_if: String,
    addr: Ipv4Addr,
    group: usize,
}

/// The two bridges, the link between them and the hosts. Dropping it deletes them all,
/// killing what still runs inside.
struct Network {
    bridges: [String; 2],
    /// The link's two ends; the first is on bridge A.
    link: [String; 2],
    hosts: Vec<Host>,
}

impl Network {
    /// Builds the bridges, the link, and one namespace per host of `groups` (each host's group).
    fn build(groups: &[usize]) -> Network {
        let pid = std::process::id();
        let mut net = Network {
            bridges: [format!("{PREFIX}{pid}b0"), format!("{PREFIX}{pid}b1")],
            link: [format!("{PREFIX}{pid}l0"), format!("{PREFIX}{pid}l1")],
            hosts: Vec::new(),
        };
        // Every step's failure panics; what was built so far goes with `net`'s drop.
        let must = |r: Result<(), String>| r.unwrap_or_else(|e| panic!("{e}"));
        for bridge in &net.bridges {
            must(ip(&["link", "add", bridge, "type", "bridge"]));
            must(ip(&["link", "set", bridge, "up"]));
        }
        let [end_a, end_b] = &net.link;
        must(ip(&[
            "link", "add", end_a, "type", "veth", "peer", "name", end_b,
        ]));
        for (end, bridge) in net.link.iter().zip(&net.bridges) {
            must(ip(&["link", "set", end, "master", bridge, "up"]));
        }
        for (i, &group) in groups.iter().enumerate() {
            let octet = u8::try_from(i + 1).expect("fewer than 255 hosts");
            let host = Host {
                netns: format!("{PREFIX}-{pid}-{i}"),
                outer_if: format!("{PREFIX}{pid}v{i}"),
                addr: Ipv4Addr::new(10, 79, 0, octet),
                group,
            };
            must(ip(&["netns", "add", &host.netns]));
            let (ns, outer) = (host.netns.clone(), host.outer_if.clone());
            let bridge = net.bridges[group].clone();
            let cidr = format!("{}/24", host.addr);
            net.hosts.push(host);
            must(ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]));
            must(ip(&["link", "set", &outer, "master", &bridge, "up"]));
            must(ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]));
            must(ip(&["-n", &ns, "link", "set", "eth0", "up"]));
            must(ip(&["-n", &ns, "link", "set", "lo", "up"]));
        }
        net
    }

    /// Host `i`'s `--listen` address.
    fn listen(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.hosts[i].addr, PORT))
    }

    /// Cuts the link between the bridges (`false`) or restores it (`true`).
    fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &self.link[0], state]).unwrap_or_else(|e| panic!("{e}"));
        report(&format!("[partition] link {} {state}", self.link[0]));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in self.hosts.drain(..) {
            kill_inside(&host.netns);
            if let Err(e) = ip(&["netns", "del", &host.netns]) {
                report(&format!("warning: {e}"));
            }
        }
        // Deleting one end of a veth pair deletes both.
        for name in [&self.link[0], &self.bridges[0], &self.bridges[1]] {
            if let Err(e) = ip(&["link", "del", name]) {
                report(&format!("warning: {e}"));
            }
        }
    }
}

/// Kills whatever still runs in `netns`: only processes this test started live there.
fn kill_inside(netns: &str) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "pids", netns]);
    let Ok(out) = harness::run_with_timeout(cmd, IP_TIMEOUT) else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
    {
        report(&format!(
            "warning: killing process {pid}, left running in {netns}"
        ));
        // SAFETY: kill has no memory preconditions; pid is a process in our namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Removes namespaces and interfaces that an earlier run, no longer alive, left behind.
fn remove_stale() {
    let is_stale = |pid: &str| {
        pid.parse::<u32>().is_ok_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "list"]);
    if let Ok(out) = run_ok(cmd) {
        for name in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
                continue;
            };
            if rest.split_once('-').is_some_and(|(pid, _)| is_stale(pid)) {
                report(&format!("removing namespace {name} left by an earlier run"));
                kill_inside(name);
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    let mut cmd = Command::new("ip");
    cmd.args(["-j", "link", "show"]);
    if let Ok(out) = run_ok(cmd) {
        let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for link in links {
            let Some(name) = link["ifname"].as_str() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let kind = &rest[pid.len()..];
            let ours = ["b0", "b1", "l0", "l1"].contains(&kind)
                || kind
                    .strip_prefix('v')
                    .is_some_and(|n| n.parse::<u32>().is_ok());
            if ours && is_stale(&pid) {
                report(&format!("removing interface {name} left by an earlier run"));
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// Whether `root` is complete on every node in `nodes` (indices into `mesh.nodes`).
fn complete_on(mesh: &Mesh<'_>, nodes: &[usize], root: &str) -> Result<(), String> {
    let apis: Vec<harness::Api> = nodes.iter().map(|&i| mesh.nodes[i].api.clone()).collect();
    let statuses: Result<Vec<_>, String> = harness::parallel(&apis, harness::Api::node_status)
        .into_iter()
        .collect();
    let missing: Vec<String> = apis
        .iter()
        .zip(statuses?)
        .filter(|(_, s)| !s.is_complete(root))
        .map(|(a, s)| format!("{} ({})", a.name, s.progress(root)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not complete on {}", missing.join(" ")))
    }
}

/// The connected components of the overlay: members as vertices, every active-view entry as an
/// undirected edge. Each component is a set of peer ids.
fn components(mesh: &Mesh<'_>) -> Result<Vec<BTreeSet<String>>, String> {
    let views = mesh.views()?;
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for view in &views {
        edges.entry(view.peer_id.clone()).or_default();
        for n in &view.active {
            edges
                .entry(view.peer_id.clone())
                .or_default()
                .insert(n.peer_id.clone());
            edges
                .entry(n.peer_id.clone())
                .or_default()
                .insert(view.peer_id.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for start in edges.keys() {
        if seen.contains(start) {
            continue;
        }
        let mut component = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(peer) = stack.pop() {
            if component.insert(peer.clone()) {
                stack.extend(edges[&peer].iter().cloned());
            }
        }
        seen.extend(component.iter().cloned());
        out.push(component);
    }
    Ok(out)
}

#[test]
fn a_partitioned_mesh_heals_and_delivers_to_both_sides() {
    let test = "a_partitioned_mesh_heals_and_delivers_to_both_sides";
    if harness::common::skip_unless_root(test, "build network namespaces") {
        return;
    }
    remove_stale();
    let groups: Vec<usize> = (0..GROUP_A + GROUP_B)
        .map(|i| usize::from(i >= GROUP_A))
        .collect();
    let net = Network::build(&groups);
    let work = Work::new("partition");
    let netns = |i: usize| Some(net.hosts[i].netns.as_str());
    let mut mesh = Mesh::start(&work, net.listen(0), netns(0));

    // Seeds: the coordinator, host 1 (group A) and host GROUP_A (group B); each node joins
    // through the three, except itself.
    let seeds = [0, 1, GROUP_A];
    for i in 1..GROUP_A + GROUP_B {
        let joins: Vec<SocketAddr> = seeds
            .iter()
            .filter(|&&s| s != i)
            .map(|&s| net.listen(s))
            .collect();
        let labels = format!("region=r{},fd={},rack={i}", net.hosts[i].group, i % 3);
        mesh.add_node(net.listen(i), netns(i), &joins, &labels);
    }
    mesh.wait_ready();
    // Node k is host k + 1.
    let group_of = |node: usize| net.hosts[node + 1].group;
    let a_nodes: Vec<usize> = (0..mesh.nodes.len())
        .filter(|&n| group_of(n) == 0)
        .collect();
    let b_nodes: Vec<usize> = (0..mesh.nodes.len())
        .filter(|&n| group_of(n) == 1)
        .collect();
    let nodes = mesh.nodes.len();
    mesh.wait_for_full_views(FULL_VIEW_WITHIN);

    net.set_link(false);
    mesh.hold(PARTITION_HOLD);
    // After the hold, failure detection has dropped every neighbour across the cut.
    let group_of_peer: BTreeMap<String, usize> = mesh
        .live()
        .iter()
        .enumerate()
        .map(|(host, p)| (p.peer_id().to_owned(), net.hosts[host].group))
        .collect();
    let views = mesh.views().unwrap();
    let mut across = Vec::new();
    for view in &views {
        let mine = group_of_peer[&view.peer_id];
        for n in &view.active {
            if group_of_peer.get(&n.peer_id) != Some(&mine) {
                across.push(format!("{} -> {}", view.addr, n.addr));
            }
        }
    }
    report(&format!(
        "[partition] during the cut the coordinator counts {} nodes",
        mesh.fleet().map_or_else(|e| e, |f| f.nodes.to_string())
    ));
    assert!(
        across.is_empty(),
        "{} s after the cut, neighbours across it are still listed: {across:?}",
        PARTITION_HOLD.as_secs()
    );

    let cut = work.release("during-cut", RELEASE_BYTES, 1);
    report(&format!("announce: {}", mesh.announce(&cut).trim()));
    mesh.wait(
        "the release announced during the cut is complete on group A",
        RELEASE_WITHIN,
        |mesh| complete_on(mesh, &a_nodes, &cut.root),
    );
    mesh.hold(ABSENCE_HOLD);
    for &n in &b_nodes {
        let status = mesh.nodes[n].api.node_status().unwrap();
        assert!(
            !status.knows(&cut.root),
            "{} in group B knows the release announced during the cut",
            mesh.nodes[n].name
        );
    }

    net.set_link(true);
    let members = mesh.live().len();
    mesh.wait(
        &format!("the overlay is one component of {members} members again"),
        HEAL_WITHIN,
        |mesh| {
            let parts = components(mesh)?;
            if parts.len() == 1 && parts[0].len() == members {
                Ok(())
            } else {
                Err(format!(
                    "components of sizes {:?}",
                    parts.iter().map(BTreeSet::len).collect::<Vec<_>>()
                ))
            }
        },
    );

    let healed = work.release("after-heal", RELEASE_BYTES, 2);
    report(&format!("announce: {}", mesh.announce(&healed).trim()));
    let all: Vec<usize> = (0..nodes).collect();
    mesh.wait(
        &format!("the release announced after healing is complete on all {nodes} nodes"),
        RELEASE_WITHIN,
        |mesh| complete_on(mesh, &all, &healed.root),
    );
}
