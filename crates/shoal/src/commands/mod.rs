//! The subcommands.

pub mod config;
mod demo;
mod demo_rollout;
mod docs;
mod keys;
mod mesh;
mod net;
mod proxy;
mod query;
mod release;
mod rollout;
mod store;
mod token;
mod trust;
mod watch;

use crate::failure::{Code, Failure, Outcome};
use clap::{Parser, Subcommand};
use std::time::{SystemTime, UNIX_EPOCH};

/// Shoal ships large payloads to fleets of machines, peer to peer, and rolls them out in waves.
#[derive(Parser, Debug)]
#[command(name = "shoal", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate and inspect ed25519 keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Create the trust document that names publisher and coordinator keys.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Create and verify signed release manifests.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Inspect and manage a machine's piece store.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Serve a published release from its payload file: the origin of a swarm.
    Seed(net::SeedArgs),
    /// Run the node daemon: serve the store's releases to peers, finish partial ones, and with
    /// --join take part in the mesh and its rollouts. `shoal node drain|undrain --node IP:PORT`
    /// takes a running node out of rollouts and back.
    Node(net::NodeArgs),
    /// Fetch one release from a swarm, verify it, then keep serving it for a while.
    Fetch(net::FetchArgs),
    /// Show a running process's releases, peers and bans, or the fleet summary at the coordinator.
    Status(net::StatusArgs),
    /// Start a coordinator and N nodes on loopback, announce a generated payload, verify every
    /// copy, then roll a tiny service out canary, pilot, broad.
    Demo(demo::DemoArgs),
    /// Run the coordinator: the mesh's broadcast source, admission authority and release origin.
    Coordinator(mesh::CoordinatorArgs),
    /// Create and revoke onboarding tokens for new nodes.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Announce a release: the coordinator serves the file and broadcasts it to the mesh.
    Announce(mesh::AnnounceArgs),
    /// Show a mesh member's views, neighbour health and counters.
    Members(mesh::MembersArgs),
    /// Create a release's manifest and publish it at the coordinator (which serves the file).
    Publish(release::PublishArgs),
    /// Plan, start, watch and steer rollouts.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Follow a service on this machine's node: its state, then one JSON line per activation,
    /// rollback and health change.
    Watch(watch::WatchArgs),
    /// Print the shell completion script: `source <(shoal completions bash)`.
    Completions(docs::CompletionsArgs),
    /// Print the manual page shoal(1), or write every page with --out DIR.
    Man(docs::ManArgs),
    /// Check config files for `shoal node --config` and `shoal coordinator --config`.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Show the coordinator's audit log of rollout decisions.
    Audit(rollout::AuditArgs),
    /// Ask the fleet which machines match labels, a version they do not run or a service
    /// state: counts and a sample, collected up the broadcast tree, with no machine list.
    Query(query::QueryArgs),
    /// Serve a local gateway to the coordinator that signs every request with your operator
    /// key (for the web page at /ui, curl and tools that cannot sign), like `kubectl proxy`.
    Proxy(proxy::ProxyArgs),
}

pub use net::{NodeControl, is_node_control, node_control};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Keys(cmd) => keys::run(cmd),
        Command::Trust(cmd) => trust::run(cmd),
        Command::Release(cmd) => release::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Seed(args) => net::seed(args),
        Command::Node(args) => net::node(args),
        Command::Fetch(args) => net::fetch(args),
        Command::Status(args) => net::status(args),
        Command::Demo(args) => demo::run(args),
        Command::Coordinator(args) => mesh::coordinator(args),
        Command::Token(cmd) => token::run(cmd),
        Command::Announce(args) => mesh::announce(args),
        Command::Members(args) => mesh::members(args),
        Command::Publish(args) => release::publish(args),
        Command::Rollout(cmd) => rollout::run(cmd),
        Command::Audit(args) => rollout::audit(args),
        Command::Query(args) => query::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Config(cmd) => config::run(cmd),
        Command::Completions(args) => docs::completions(&args),
        Command::Watch(args) => watch::run(&args),
        Command::Man(args) => docs::man(&args),
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Formats Unix seconds as an RFC 3339 UTC time.
fn rfc3339(unix_secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(unix_secs))
        .to_string()
}

/// Prints one JSON value on stdout.
fn print_json(value: &serde_json::Value) -> Outcome {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(Code::General, format!("cannot format output: {e}")))?;
    println!("{text}");
    Ok(())
}

/// With `--json`, a failure is also printed as a JSON object on stdout, so a script reading stdout
/// always gets one object.
fn json_failure(json: bool, failure: Failure) -> Failure {
    if json {
        let _ = print_json(&serde_json::json!({
            "ok": false,
            "error": {
                "kind": failure.code.name(),
                "code": failure.code as u8,
                "message": failure.message,
            }
        }));
    }
    failure
}
