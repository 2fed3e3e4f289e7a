//! The external programs the benchmark drives, found on `PATH` (and in the `sbin`
//! directories, which root's `PATH` does not always hold).

use super::config::{Config, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Runs `scripts/bench-setup`, which installs whatever Debian package is missing. A failure
/// is reported and not fatal: [`Tools::find`] then says what is missing.
pub fn install() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-setup");
    match std::process::Command::new(script).status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("warning: {script} failed ({status})"),
        Err(e) => eprintln!("warning: cannot run {script}: {e}"),
    }
}

/// Absolute paths of the programs this run needs.
pub struct Tools {
    paths: BTreeMap<&'static str, PathBuf>,
}

impl Tools {
    /// Finds every program `config` needs.
    ///
    /// # Errors
    ///
    /// The names of the programs that are missing.
    pub fn find(config: &Config) -> Result<Tools, Vec<String>> {
        let mut names = vec!["ip", "tc", "ss", "b3sum", "iperf3"];
        for system in &config.systems {
            names.extend_from_slice(match system {
                System::Shoal => &[][..],
                System::Http => &["nginx", "curl"][..],
                System::Bittorrent => &["opentracker", "mktorrent", "aria2c", "curl"][..],
            });
        }
        let mut paths = BTreeMap::new();
        let mut missing = Vec::new();
        for name in names {
            match which(name) {
                Some(path) => {
                    paths.insert(name, path);
                }
                None if !missing.iter().any(|m| m == name) => missing.push(name.to_string()),
                None => {}
            }
        }
        if missing.is_empty() {
            Ok(Tools { paths })
        } else {
            Err(missing)
        }
    }

    /// The path of `name`, which [`Tools::find`] checked for.
    ///
    /// # Panics
    ///
    /// If `name` is not one of the programs `find` looked for: a bug in this benchmark.
    pub fn get(&self, name: &str) -> &Path {
        match self.paths.get(name) {
            Some(p) => p,
            None => panic!("the benchmark uses {name} without checking for it"),
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
