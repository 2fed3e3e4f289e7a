//! `shoal token create|revoke|revoked`: onboarding tokens at the coordinator.

use super::{json_failure, print_json};
use crate::failure::Outcome;
use crate::http::OperatorKeyArg;
use clap::{Args, Subcommand};
use shoal_core::labels::Labels;
use shoal_core::revocation::Revocations;
use shoal_daemon::revoke::{REVOKE_PATH, REVOKED_PATH, RevokeAnswer, RevokeRequest};
use shoal_net::api;
use shoal_net::coordinator::{TokenAnswer, TokenRequest};
use std::net::SocketAddr;
use std::time::Duration;

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    shoal_net::node::parse_addr(text, "address").map_err(|e| e.to_string())
}

/// `shoal token ...`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an onboarding token; prints it alone on stdout.
    Create(CreateArgs),
    /// Revoke a token: no machine joins with it any more, and machines that joined with it are
    /// refused by every member and cannot renew their certificates.
    Revoke(RevokeArgs),
    /// Show the revoked tokens.
    Revoked(RevokedArgs),
}

/// `shoal token create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: OperatorKeyArg,
    /// How long the token can be used to join, e.g. 30m, 1h, 2days.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Labels a node must carry to use the token, e.g. region=eu1,fd=2.
    #[arg(long, value_name = "K=V,...", default_value = "")]
    labels: Labels,
}

/// `shoal token revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The token's text, or its id (32 hex digits, as `shoal token revoked` shows).
    #[arg(value_name = "TOKEN_OR_ID")]
    token: String,
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: OperatorKeyArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `shoal token revoked`.
#[derive(Args, Debug)]
pub struct RevokedArgs {
    /// The coordinator's --listen IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    coordinator: SocketAddr,
    #[command(flatten)]
    operator: OperatorKeyArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(command: TokenCommand) -> Outcome {
    match command {
        TokenCommand::Create(args) => {
            let request = TokenRequest {
                ttl_secs: args.ttl.as_secs(),
                labels: args.labels,
            };
            let answer: TokenAnswer = args.operator.signer()?.post(
                args.coordinator,
                api::TOKENS_PATH,
                &request,
                Duration::from_secs(10),
            )?;
            println!("{}", answer.token);
            Ok(())
        }
        TokenCommand::Revoke(args) => {
            let json = args.json;
            let request = RevokeRequest { token: args.token };
            let answer: RevokeAnswer = args
                .operator
                .signer()
                .and_then(|s| {
                    s.post(
                        args.coordinator,
                        REVOKE_PATH,
                        &request,
                        Duration::from_secs(30),
                    )
                })
                .map_err(|f| json_failure(json, f))?;
            if json {
                return print_json(&serde_json::json!(answer));
            }
            let listed = super::rfc3339(answer.until_unix_secs);
            let sent = answer.seq.map_or_else(String::new, |seq| {
                format!("; the list went out as broadcast {seq}")
            });
            if answer.already {
                println!(
                    "token {} was revoked already; listed until {listed}{sent}",
                    answer.id
                );
            } else {
                println!("revoked token {}, listed until {listed}{sent}", answer.id);
            }
            Ok(())
        }
        TokenCommand::Revoked(args) => {
            let json = args.json;
            let list: Revocations = args
                .operator
                .signer()
                .and_then(|s| s.get(args.coordinator, REVOKED_PATH))
                .map_err(|f| json_failure(json, f))?;
            if json {
                return print_json(&serde_json::json!(list));
            }
            if list.entries().is_empty() {
                println!("no token is revoked");
            }
            for entry in list.entries() {
                println!(
                    "{}  listed until {}",
                    hex::encode(entry.id),
                    super::rfc3339(entry.until_unix_secs)
                );
            }
            Ok(())
        }
    }
}
