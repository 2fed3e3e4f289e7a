//! `shoal query`: which machines match, asked of the fleet itself.

use super::{json_failure, print_json};
use crate::failure::{Code, Failure, Outcome};
use crate::http::OperatorKeyArg;
use clap::Args;
use shoal_core::labels::Labels;
use shoal_core::query::{MAX_QUERY_SAMPLE, VersionRef, parse_state};
use shoal_daemon::query::{
    DEFAULT_LIMIT, DEFAULT_WAIT_SECS, MAX_WAIT_SECS, QUERY_PATH, QueryParams, QueryResult,
};
use std::net::SocketAddr;
use std::time::Duration;

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    shoal_net::node::parse_addr(text, "address").map_err(|e| e.to_string())
}

/// `shoal query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: OperatorKeyArg,
    /// Labels a machine must carry, e.g. region=eu1,fd=2 (default: every machine).
    #[arg(long, value_name = "K=V,...")]
    select: Option<Labels>,
    /// Only machines not running this version: VERSION, or SERVICE@VERSION for one service.
    #[arg(long, value_name = "VER")]
    version_not: Option<VersionRef>,
    /// Only machines with a service in this state: idle, staged, activating, healthy, failed,
    /// rolled_back.
    #[arg(long, value_name = "STATE", value_parser = check_state)]
    state: Option<String>,
    /// The most machines to list.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT,
          value_parser = clap::value_parser!(u16).range(0..=i64::from(MAX_QUERY_SAMPLE)))]
    limit: u16,
    /// How long the coordinator collects answers, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT_SECS))]
    wait: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn check_state(text: &str) -> Result<String, String> {
    parse_state(text).map(|s| s.as_str().to_owned())
}

pub fn run(args: QueryArgs) -> Outcome {
    let json = args.json;
    let params = QueryParams {
        select: args.select.map(|l| l.to_string()),
        version_not: args.version_not.map(|v| match v.service {
            Some(service) => format!("{service}@{}", v.version),
            None => v.version,
        }),
        state: args.state,
        limit: Some(args.limit),
        wait_secs: Some(args.wait),
    };
    let query = serde_urlencoded::to_string(&params)
        .map_err(|e| Failure::new(Code::General, format!("cannot encode the query: {e}")))?;
    let timeout = Duration::from_secs(args.wait + 10);
    let result: QueryResult = args
        .operator
        .signer()
        .and_then(|s| s.get_within(args.coordinator, &format!("{QUERY_PATH}?{query}"), timeout))
        .map_err(|f| json_failure(json, f))?;
    if json {
        return print_json(&serde_json::json!(result));
    }
    println!(
        "{} machines match, of {} that answered ({} in the fleet{}) within {:.1} s",
        result.matched,
        result.answered,
        result.fleet,
        if result.complete {
            ", all answered"
        } else {
            "; the rest did not answer in time"
        },
        result.waited_ms as f64 / 1000.0
    );
    for cell in &result.cells {
        println!(
            "  region {:<12} fault domain {:<12} {}",
            if cell.region.is_empty() {
                "-"
            } else {
                &cell.region
            },
            if cell.fault_domain.is_empty() {
                "-"
            } else {
                &cell.fault_domain
            },
            cell.matched
        );
    }
    for node in &result.sample {
        let services: Vec<String> = node
            .services
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}",
                    s.service,
                    s.version.as_deref().unwrap_or("-"),
                    s.state
                )
            })
            .collect();
        println!(
            "  {:<22} {}  {}  {}",
            node.addr,
            node.peer_id,
            node.labels,
            services.join("; ")
        );
    }
    if usize::try_from(result.matched).unwrap_or(usize::MAX) > result.sample.len() {
        println!(
            "  ... and {} more (--limit)",
            result.matched as usize - result.sample.len()
        );
    }
    Ok(())
}
