//! How commands fail: a message for people, an exit code for scripts.

use std::fmt;

/// Exit codes. `release verify` gives each kind of failure its own code, so a script can tell a
/// tampered manifest from a corrupt download without parsing messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Any other failure.
    General = 1,
    /// Bad command-line usage (clap's own code).
    Usage = 2,
    /// An input file is missing or unreadable.
    Unreadable = 3,
    /// The manifest is truncated, garbage, or structurally invalid.
    Malformed = 4,
    /// The trust document is invalid, or signed by an unexpected root.
    Trust = 5,
    /// The manifest's signature chain does not hold: unknown publisher or bad signature.
    Signature = 6,
    /// The manifest's piece list does not combine to its root.
    Pieces = 7,
    /// The payload file differs from the manifest (length or content).
    FileMismatch = 8,
}

impl Code {
    /// A stable lower-case name, used as `error.kind` in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Code::General => "error",
            Code::Usage => "usage",
            Code::Unreadable => "unreadable",
            Code::Malformed => "malformed_manifest",
            Code::Trust => "trust",
            Code::Signature => "signature",
            Code::Pieces => "piece_list",
            Code::FileMismatch => "file_mismatch",
        }
    }
}

/// A failed command.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: Code,
    /// What went wrong, naming the input and what to do.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(Code::General, format!("{e:#}"))
    }
}

/// Result of a command.
pub type Outcome = Result<(), Failure>;

/// Attaches a code to errors, with a message built from the error.
pub trait WithCode<T> {
    /// Maps the error to a [`Failure`] with `code` and the message `what: error`.
    fn code(self, code: Code, what: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T, E: fmt::Display> WithCode<T> for Result<T, E> {
    fn code(self, code: Code, what: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(code, format!("{}: {e}", what())))
    }
}
