//! `shoal`: the command-line front of Shoal, a peer-to-peer payload distribution mesh.
//!
//! Each subcommand lives in [`commands`]; this file parses the command line, runs the command and
//! turns its [`Failure`](failure::Failure) into a message on stderr and an exit code.

mod commands;
mod config_file;
mod failure;
mod files;
mod http;
mod keyfile;
mod progress;

use clap::{CommandFactory, Parser};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let outcome = if commands::is_node_control(&args) {
        let name = std::ffi::OsString::from("shoal node");
        let control =
            commands::NodeControl::parse_from(std::iter::once(&name).chain(args.iter().skip(2)));
        commands::node_control(control)
    } else {
        let root = commands::Cli::command();
        config_file::expand(&root, &commands::config::WITH_CONFIG, args)
            .and_then(|args| commands::run(commands::Cli::parse_from(args)))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use failure::Code;

    #[test]
    fn command_line_definition_is_consistent() {
        commands::Cli::command().debug_assert();
        assert_eq!(Code::FileMismatch as u8, 8);
    }
}
