//! A process's node identity: an ed25519 key whose libp2p peer id names it on the data plane.

use anyhow::{Context, Result, bail};
use libp2p_identity::{Keypair, PeerId};
use shoal_core::keys::{Role, SecretKey};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The file in a data directory that holds the node's secret key.
pub const NODE_KEY_FILE: &str = "node.key";

/// A node's secret key and the peer id derived from it.
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
    peer_id: PeerId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl Identity {
    /// The identity of a node key.
    ///
    /// # Errors
    ///
    /// If the key is not a node key.
    pub fn from_secret(secret: &SecretKey) -> Result<Self> {
        if secret.role() != Role::Node {
            bail!("a {} key is not a node key", secret.role());
        }
        let keypair = Keypair::ed25519_from_bytes(secret.seed())
            .context("ed25519 seed refused by libp2p-identity")?;
        let peer_id = keypair.public().to_peer_id();
        Ok(Self { keypair, peer_id })
    }

    /// Loads `DATA_DIR/node.key`, creating it (mode 0600) on first start.
    ///
    /// # Errors
    ///
    /// If the file cannot be read or created, is readable by others, or holds no node key.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(NODE_KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mode = fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    bail!(
                        "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    );
                }
                let secret = SecretKey::from_text(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Self::from_secret(&secret).with_context(|| path.display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut seed);
                let secret = SecretKey::from_seed(Role::Node, seed);
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("cannot create node key {}", path.display()))?;
                file.write_all(secret.to_text().as_bytes())?;
                file.sync_all()?;
                Self::from_secret(&secret)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read node key {}", path.display())),
        }
    }

    /// The libp2p key pair, for TLS certificates.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }
}
