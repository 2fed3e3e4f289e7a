//! Reading and writing key files, with the permissions a secret deserves.

use anyhow::{Context, Result, bail};
use shoal_core::keys::{MAX_KEY_FILE_BYTES, PublicKey, Role, RolePublicKey, SecretKey};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The path of the public half of the key at `path`: `PATH.pub`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Writes `key` to `path` (mode 0600) and its public half to `PATH.pub` (mode 0644). Refuses to
/// replace existing files unless `force`: a lost secret key cannot be recovered.
pub fn write_pair(path: &Path, key: &SecretKey, force: bool) -> Result<PathBuf> {
    let public = public_path(path);
    if !force {
        for p in [path, public.as_path()] {
            if p.exists() {
                bail!(
                    "{} already exists: refusing to overwrite a key (pass --force to replace it)",
                    p.display()
                );
            }
        }
    }
    write_file(path, key.to_text().as_bytes(), 0o600)?;
    write_file(&public, key.role_public().to_text().as_bytes(), 0o644)?;
    Ok(public)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    shoal_store::fsutil::write_atomic(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a secret key of `role` from `path`. Refuses a file that others can read or write.
pub fn read_secret(path: &Path, role: Role) -> Result<SecretKey> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read secret key {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "secret key {} is accessible by other users (mode {mode:03o}): run `chmod 600 {}` and keep it private",
            path.display(),
            path.display()
        );
    }
    let text = read_small(path, "secret key")?;
    let key = SecretKey::from_text(&text)
        .with_context(|| format!("{} is not a usable secret key", path.display()))?;
    key.expect_role(role)
        .with_context(|| format!("cannot use {}", path.display()))
}

/// Reads a public key of `role` from `path`.
pub fn read_public(path: &Path, role: Role) -> Result<PublicKey> {
    let text = read_small(path, "public key")?;
    let key = RolePublicKey::from_text(&text)
        .with_context(|| format!("{} is not a usable public key", path.display()))?;
    key.expect_role(role)
        .with_context(|| format!("cannot use {}", path.display()))
}

fn read_small(path: &Path, what: &str) -> Result<String> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{} is not a text key file", path.display()))?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        bail!(
            "{} is larger than a key file can be ({MAX_KEY_FILE_BYTES} bytes)",
            path.display()
        );
    }
    Ok(text)
}
