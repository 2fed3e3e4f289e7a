//! `shoal watch --data-dir DIR --service NAME`: a local process's view of a service on this
//! machine's node, one JSON line per change, from the node's subscription socket
//! ([`shoal_daemon::events`]).

use crate::failure::{Code, Failure, Outcome};
use clap::Args;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// `shoal watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The node's data directory (its `--data-dir`); the node listens on `events.sock` in it.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The service to watch, as named in the node's services file.
    #[arg(long, value_name = "NAME")]
    service: String,
}

/// Prints the service's state, then a line per change (`state`, `activated`, `rolled_back`),
/// until the node stops or the command is interrupted.
pub fn run(args: &WatchArgs) -> Outcome {
    let path = shoal_daemon::events::socket_path(&args.data_dir);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        Failure::new(
            Code::Unreadable,
            format!(
                "cannot reach a node's subscription socket at {}: {e}; is `shoal node --data-dir {} --join ...` running?",
                path.display(),
                args.data_dir.display()
            ),
        )
    })?;
    writeln!(stream, "{}", args.service)
        .map_err(|e| Failure::new(Code::General, format!("cannot subscribe: {e}")))?;
    let mut out = std::io::stdout().lock();
    for (i, line) in BufReader::new(stream).lines().enumerate() {
        let line = line.map_err(|e| Failure::new(Code::General, format!("subscription: {e}")))?;
        if i == 0
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(error) = v.get("error").and_then(|e| e.as_str())
        {
            return Err(Failure::new(
                Code::Usage,
                format!("the node refused: {error}"),
            ));
        }
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // The reader went away (`| head`): nothing left to do.
            return Ok(());
        }
    }
    Err(Failure::new(
        Code::General,
        format!(
            "the node at {} closed the subscription (it stopped)",
            args.data_dir.display()
        ),
    ))
}
