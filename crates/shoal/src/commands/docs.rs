//! `shoal completions SHELL` and `shoal man`: shell completions and manual pages, both made
//! from the command-line definition itself, so they cannot drift from it.

use crate::failure::{Code, Failure, Outcome};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::path::PathBuf;

/// `shoal completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (or elvish, powershell).
    shell: Shell,
}

/// `shoal man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write shoal.1 and a page per subcommand (shoal-node.1, shoal-rollout-start.1, ...) into
    /// this directory, instead of shoal.1 on stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Prints the completion script for the shell on stdout.
pub fn completions(args: &CompletionsArgs) -> Outcome {
    let mut command = super::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "shoal", &mut script);
    print(&script)
}

/// Writes `bytes` on stdout; a reader that stops early (`| head`) is not a failure.
fn print(bytes: &[u8]) -> Outcome {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
            Code::General,
            format!("cannot write to stdout: {e}"),
        )),
        _ => Ok(()),
    }
}

/// Prints shoal(1), or writes every page into `--out`.
pub fn man(args: &ManArgs) -> Outcome {
    let command = super::Cli::command().name("shoal");
    match &args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| {
                    Failure::new(Code::General, format!("cannot render the man page: {e}"))
                })?;
            print(&page)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::new(
                    Code::Unreadable,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
            clap_mangen::generate_to(command, dir).map_err(|e| {
                Failure::new(
                    Code::General,
                    format!("cannot write the man pages into {}: {e}", dir.display()),
                )
            })?;
            eprintln!("man pages written to {}", dir.display());
            Ok(())
        }
    }
}
