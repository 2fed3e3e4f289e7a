//! Payload files: generating them and hashing them with `b3sum`.

use super::exec;
use super::setup::Tools;
use anyhow::{Context as _, Result};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Writes `bytes` of pseudo-random, incompressible data to `path` (a SplitMix64 stream).
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_payload(path: &Path, bytes: u64) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut state: u64 = 0x5348_4f41_4c5f_4245; // "SHOAL_BE"
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        file.write_all(&block[..n])
            .with_context(|| format!("cannot write {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// The BLAKE3 hash of `path`, in hex, from `b3sum`.
///
/// # Errors
///
/// When `b3sum` fails or prints something that is not a hash.
pub fn b3sum(tools: &Tools, path: &Path) -> Result<String> {
    let out = exec::text(
        Command::new(tools.get("b3sum")).arg("--no-names").arg(path),
        Duration::from_secs(600),
    )?;
    let hash = out.trim().to_string();
    anyhow::ensure!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "b3sum printed {hash:?} for {}",
        path.display()
    );
    Ok(hash)
}

/// Checks that every file in `paths` hashes to `root`.
///
/// # Errors
///
/// Names every file that is missing or differs.
pub fn verify_all(tools: &Tools, paths: &[std::path::PathBuf], root: &str) -> Result<()> {
    let mut bad = Vec::new();
    for path in paths {
        match b3sum(tools, path) {
            Ok(h) if h == root => {}
            Ok(h) => bad.push(format!("{} has BLAKE3 {h}", path.display())),
            Err(e) => bad.push(format!("{e:#}")),
        }
    }
    anyhow::ensure!(
        bad.is_empty(),
        "{} of {} payloads do not verify against {root}: {}",
        bad.len(),
        paths.len(),
        bad.join("; ")
    );
    Ok(())
}
