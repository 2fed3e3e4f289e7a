//! File helpers shared by the commands.

use std::io::Read;
use std::path::Path;

/// Reads at most `limit + 1` bytes of a file, so an oversize input is detected without reading
/// all of it.
pub fn read_limited(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Checks that writing `path` destroys nothing but an earlier output of the same kind: it may not
/// exist yet, or its first bytes must satisfy `is_same_kind`. Guards against `--out` naming the
/// payload or some other precious file by mistake.
///
/// # Errors
///
/// A message naming the path and what to do.
pub fn check_replaceable(
    path: &Path,
    kind: &str,
    is_same_kind: impl Fn(&[u8]) -> bool,
) -> Result<(), String> {
    let head = match std::fs::File::open(path) {
        Ok(file) => {
            let mut head = Vec::new();
            file.take(64)
                .read_to_end(&mut head)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            head
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot check {}: {e}", path.display())),
    };
    if is_same_kind(&head) {
        Ok(())
    } else {
        Err(format!(
            "{} exists and is not a {kind}: refusing to overwrite it; remove it or choose another --out",
            path.display()
        ))
    }
}
