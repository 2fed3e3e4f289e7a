//! `shoal keys`: key generation and inspection.

use crate::failure::Outcome;
use crate::keyfile;
use clap::Subcommand;
use rand::RngCore;
use shoal_core::keys::{Role, SecretKey};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a key: writes PATH (secret, mode 0600) and PATH.pub (public).
    Generate {
        /// What the key is for: root, publisher, coordinator or node.
        #[arg(long)]
        role: Role,
        /// Where to write the secret key; the public key goes to PATH.pub.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Print the public key and fingerprint of a secret key file.
    Show {
        /// The secret key file.
        key: PathBuf,
        /// The role the key must have.
        #[arg(long)]
        role: Role,
    },
}

pub fn run(cmd: KeysCommand) -> Outcome {
    match cmd {
        KeysCommand::Generate { role, out, force } => {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let key = SecretKey::from_seed(role, seed);
            let public = keyfile::write_pair(&out, &key, force)?;
            eprintln!(
                "wrote {role} key {} to {} (secret, mode 0600) and {}",
                key.public().fingerprint(),
                out.display(),
                public.display()
            );
            Ok(())
        }
        KeysCommand::Show { key, role } => {
            let key = keyfile::read_secret(&key, role)?;
            println!("{}", key.role_public().to_text().trim_end());
            println!("# fingerprint {}", key.public().fingerprint());
            Ok(())
        }
    }
}
