//! `shoal rollout ...` and `shoal audit`: start, watch and steer rollouts at the coordinator.

use super::{json_failure, print_json};
use crate::failure::{Code, Failure, Outcome};
use crate::http;
use clap::{Args, Subcommand};
use shoal_core::rollout::conductor::Status;
use shoal_daemon::db::AuditEntry;
use shoal_daemon::routes::{AUDIT_PATH, ROLLOUTS_PATH, StartRequest};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    shoal_net::node::parse_addr(text, "address").map_err(|e| e.to_string())
}

/// `shoal rollout ...`.
#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Dry run: count the fleet for a plan and show its waves, without starting anything.
    Plan(StartArgs),
    /// Start a rollout; prints its id.
    Start(StartArgs),
    /// Show one rollout, or every rollout.
    Status(StatusArgs),
    /// Open no new wave until resumed.
    Pause(VerbArgs),
    /// Continue a paused rollout (the current wave's deadline starts again).
    Resume(VerbArgs),
    /// Pass the current wave now, without waiting for its gate.
    Promote(VerbArgs),
    /// Send every node of the service back to the release the rollout replaced.
    Rollback(VerbArgs),
    /// Stop the rollout; with --revert, nodes that activated it go back to their previous release.
    Abort(AbortArgs),
}

/// `rollout plan|start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: crate::http::OperatorKeyArg,
    /// The plan file (TOML: stages with selectors, sizes, gates).
    #[arg(long, value_name = "PLAN.toml")]
    plan: PathBuf,
    /// The service to roll out.
    #[arg(long)]
    service: String,
    /// The published version to roll out.
    #[arg(long)]
    version: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `rollout status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: crate::http::OperatorKeyArg,
    /// The rollout's id; every rollout if omitted.
    rollout: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Show the rollout live until it finishes.
    #[arg(long)]
    watch: bool,
}

/// `rollout pause|resume|promote|rollback`.
#[derive(Args, Debug)]
pub struct VerbArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: crate::http::OperatorKeyArg,
    /// The rollout's id.
    rollout: u64,
}

/// `rollout abort`.
#[derive(Args, Debug)]
pub struct AbortArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: crate::http::OperatorKeyArg,
    /// The rollout's id.
    rollout: u64,
    /// Nodes that activated the release go back to the one they ran before.
    #[arg(long)]
    revert: bool,
}

/// `shoal audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: crate::http::OperatorKeyArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: RolloutCommand) -> Outcome {
    match command {
        RolloutCommand::Plan(args) => start(args, true),
        RolloutCommand::Start(args) => start(args, false),
        RolloutCommand::Status(args) => status(args),
        RolloutCommand::Pause(a) => verb(&a.operator, a.coordinator, a.rollout, "pause"),
        RolloutCommand::Resume(a) => verb(&a.operator, a.coordinator, a.rollout, "resume"),
        RolloutCommand::Promote(a) => verb(&a.operator, a.coordinator, a.rollout, "promote"),
        RolloutCommand::Rollback(a) => verb(&a.operator, a.coordinator, a.rollout, "rollback"),
        RolloutCommand::Abort(a) => verb(
            &a.operator,
            a.coordinator,
            a.rollout,
            if a.revert { "abort-revert" } else { "abort" },
        ),
    }
}

fn start(args: StartArgs, dry_run: bool) -> Outcome {
    let json = args.json;
    let plan = std::fs::read_to_string(&args.plan)
        .map_err(|e| {
            Failure::new(
                Code::Unreadable,
                format!("cannot read the plan {}: {e}", args.plan.display()),
            )
        })
        .and_then(|text| {
            shoal_core::rollout::Plan::from_toml(&text).map_err(|e| {
                Failure::new(Code::Usage, format!("plan {}: {e}", args.plan.display()))
            })?;
            Ok(text)
        })
        .map_err(|f| json_failure(json, f))?;
    let request = StartRequest {
        plan,
        service: args.service,
        version: args.version,
        dry_run,
    };
    let signer = args.operator.signer().map_err(|f| json_failure(json, f))?;
    let status: Status = signer
        .post(
            args.coordinator,
            ROLLOUTS_PATH,
            &request,
            Duration::from_secs(120),
        )
        .map_err(|f| json_failure(json, f))?;
    if json {
        return print_value(&status);
    }
    if dry_run {
        print_plan(&status);
    } else {
        println!("{}", status.id);
        eprintln!(
            "rollout {} of {} {} started: {} waves",
            status.id,
            status.service,
            status.version,
            status.waves.len()
        );
    }
    Ok(())
}

fn print_value<T: serde::Serialize>(value: &T) -> Outcome {
    let value =
        serde_json::to_value(value).map_err(|e| Failure::new(Code::General, e.to_string()))?;
    print_json(&value)
}

fn print_plan(status: &Status) {
    println!(
        "plan for {} {}: the census counted {} nodes, {} of them excluded",
        status.service, status.version, status.nodes, status.excluded
    );
    for (cell, n) in &status.census {
        let stage = status
            .stages
            .get(usize::from(cell.stage))
            .map_or("?", |s| s.name.as_str());
        println!(
            "  stage {stage}: {n} nodes match in region {:?}, fault domain {:?}",
            cell.region, cell.fault_domain
        );
    }
}

fn status(args: StatusArgs) -> Outcome {
    let json = args.json;
    loop {
        let statuses = args
            .operator
            .signer()
            .and_then(|s| fetch(&s, args.coordinator, args.rollout))
            .map_err(|f| json_failure(json, f))?;
        if json {
            match (args.rollout, statuses.first()) {
                (Some(_), Some(s)) => print_value(s)?,
                _ => print_value(&statuses)?,
            }
        } else {
            if args.watch {
                print!("\x1b[2J\x1b[H");
            }
            if statuses.is_empty() {
                println!("no rollouts");
            }
            for s in &statuses {
                print_status(s);
            }
        }
        let running = statuses
            .iter()
            .any(|s| s.state == "running" || s.state == "paused");
        if !args.watch || !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn fetch(signer: &http::Signer, addr: SocketAddr, id: Option<u64>) -> Result<Vec<Status>, Failure> {
    match id {
        Some(id) => Ok(vec![signer.get(addr, &format!("{ROLLOUTS_PATH}/{id}"))?]),
        None => signer.get(addr, ROLLOUTS_PATH),
    }
}

fn print_status(s: &Status) {
    let wave = s.wave.map_or_else(String::new, |w| {
        format!(", wave {} of {}", w + 1, s.waves.len())
    });
    println!(
        "rollout {}: {} {} {}{wave}",
        s.id, s.service, s.version, s.state
    );
    if let Some(reason) = &s.reason {
        println!("  {reason}");
    }
    for stage in &s.stages {
        println!(
            "  {:<10} {:<8} healthy {:>5}  failed {:>5}  activating {:>5}  expected {:>5}",
            stage.name, stage.state, stage.healthy, stage.failed, stage.activating, stage.expected
        );
    }
    for (reason, n) in &s.reasons {
        println!("  {n} failed: {reason}");
    }
    if !s.failed_sample.is_empty() {
        println!("  failed nodes: {}", s.failed_sample.join(", "));
    }
}

fn verb(operator: &http::OperatorKeyArg, addr: SocketAddr, id: u64, verb: &str) -> Outcome {
    let status: Status = operator.signer()?.post(
        addr,
        &format!("{ROLLOUTS_PATH}/{id}/{verb}"),
        &serde_json::json!({}),
        Duration::from_secs(30),
    )?;
    print_status(&status);
    Ok(())
}

pub fn audit(args: AuditArgs) -> Outcome {
    let entries: Vec<AuditEntry> = args
        .operator
        .signer()
        .and_then(|s| s.get(args.coordinator, AUDIT_PATH))
        .map_err(|f| json_failure(args.json, f))?;
    if args.json {
        return print_value(&entries);
    }
    for e in &entries {
        let wave = e.wave.map_or_else(String::new, |w| format!(" wave {w}"));
        let rollout = e
            .rollout
            .map_or_else(String::new, |r| format!(" rollout {r}"));
        let actor = e.actor.as_deref().unwrap_or("conductor");
        println!(
            "{:>5} {} {actor}{rollout}{wave}: {}",
            e.seq,
            super::rfc3339(e.at_unix_ms / 1000),
            e.event
        );
    }
    Ok(())
}
