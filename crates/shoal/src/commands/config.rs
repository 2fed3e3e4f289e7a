//! `shoal config check FILE`: checks a config file against the commands that take one.

use crate::config_file;
use crate::failure::{Code, Failure, Outcome};
use clap::{Args, CommandFactory, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `shoal config ...`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a config file: every key a flag of the command, every value one its flag takes.
    /// Names the bad key and its line, and exits non-zero.
    Check(CheckArgs),
}

/// The commands that take `--config FILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum For {
    /// `shoal node`.
    Node,
    /// `shoal coordinator`.
    Coordinator,
}

impl For {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            For::Node => "node",
            For::Coordinator => "coordinator",
        }
    }
}

/// The subcommands that take `--config FILE`.
pub const WITH_CONFIG: [&str; 2] = ["node", "coordinator"];

/// `shoal config check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The config file (TOML; keys are the command's long flags, as in `configs/`).
    file: PathBuf,
    /// The command the file is for; without it, the file must suit `node` or `coordinator`.
    #[arg(long = "for", value_name = "COMMAND")]
    command: Option<For>,
}

pub fn run(cmd: ConfigCommand) -> Outcome {
    match cmd {
        ConfigCommand::Check(args) => check(&args),
    }
}

fn check(args: &CheckArgs) -> Outcome {
    let settings = config_file::read(&args.file)?;
    let root = super::Cli::command();
    let candidates: Vec<For> = match args.command {
        Some(c) => vec![c],
        None => vec![For::Node, For::Coordinator],
    };
    let mut fewest: Option<(For, Vec<config_file::Problem>)> = None;
    let mut suits = Vec::new();
    for c in candidates {
        let command = root
            .find_subcommand(c.name())
            .expect("node and coordinator are subcommands");
        let problems = config_file::check(command, &settings);
        if problems.is_empty() {
            suits.push(c.name());
        } else if fewest
            .as_ref()
            .is_none_or(|(_, p)| problems.len() < p.len())
        {
            fewest = Some((c, problems));
        }
    }
    if !suits.is_empty() {
        println!(
            "{}: {} keys, valid for shoal {}",
            args.file.display(),
            settings.len(),
            suits.join(" and shoal ")
        );
        return Ok(());
    }
    let (c, problems) = fewest.expect("a command was checked");
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{}: {}", args.file.display(), p.line, p.message))
        .collect();
    Err(Failure::new(
        Code::Usage,
        format!(
            "{} is not a valid config file for shoal {}:\n{}",
            args.file.display(),
            c.name(),
            lines.join("\n")
        ),
    ))
}
