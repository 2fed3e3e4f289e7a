//! Ed25519 keys and their roles, and the text form of key files.
//!
//! Shoal has five key roles. The **root** key (kept offline) signs the trust document; **publisher**
//! keys sign release manifests; **coordinator** keys sign rollout directives and admission
//! certificates; **operator** keys sign requests to the coordinator; every machine has a **node**
//! key, which is also its libp2p identity.
//!
//! Key files are one line of text so an operator can tell them apart with `cat`:
//!
//! ```text
//! shoal-secret-key-v1 publisher 9f2c…(64 hex digits of the ed25519 seed)
//! shoal-public-key-v1 publisher 3b6a…(64 hex digits of the public key)
//! ```
//!
//! Lines starting with `#` are comments. Reading and writing the files (and their permissions) is
//! the caller's job; this module only encodes and decodes their text.

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

const SECRET_TAG: &str = "shoal-secret-key-v1";
const PUBLIC_TAG: &str = "shoal-public-key-v1";

/// The largest key file accepted, in bytes: a key line with generous room for comments.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// What a key is for. A key of one role is refused where another is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Signs the trust document. Keep it offline.
    Root,
    /// Signs release manifests.
    Publisher,
    /// Signs rollout directives and admission certificates.
    Coordinator,
    /// Signs an operator's requests to the coordinator, within the scopes the trust document
    /// gives it.
    Operator,
    /// Identifies one machine.
    Node,
}

impl Role {
    /// The role's name as written in key files and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Publisher => "publisher",
            Role::Coordinator => "coordinator",
            Role::Operator => "operator",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "root" => Ok(Role::Root),
            "publisher" => Ok(Role::Publisher),
            "coordinator" => Ok(Role::Coordinator),
            "operator" => Ok(Role::Operator),
            "node" => Ok(Role::Node),
            other => Err(KeyError::UnknownRole(other.to_owned())),
        }
    }
}

/// Why key text could not be used.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The role name is not one of root, publisher, coordinator, operator, node.
    #[error("unknown key role {0:?}: expected root, publisher, coordinator, operator or node")]
    UnknownRole(String),
    /// The text is not a key line of the expected kind.
    #[error("not a shoal {expected} key: expected a line \"{tag} ROLE HEX\"")]
    Malformed {
        /// "secret" or "public".
        expected: &'static str,
        /// The tag the line should start with.
        tag: &'static str,
    },
    /// The key bytes are not valid hex of the right length, or not a valid ed25519 key.
    #[error("the {0} key is not 64 hex digits of a valid ed25519 key")]
    BadKeyBytes(&'static str),
    /// The key has another role than the one needed here.
    #[error("this is a {found} key, but a {expected} key is needed here")]
    WrongRole {
        /// The role needed.
        expected: Role,
        /// The role the key has.
        found: Role,
    },
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(#[serde(with = "crate::hexbytes")] pub [u8; 32]);

impl PublicKey {
    /// A short, stable name for the key: `ed25519:` and its first 8 bytes in hex.
    pub fn fingerprint(&self) -> String {
        format!("ed25519:{}", hex::encode(&self.0[..8]))
    }

    /// Checks an ed25519 signature made with [`SecretKey::sign`] over `domain` and `message`.
    /// Returns `false` for any failure, including a public key that is not a valid curve point.
    pub fn verify(&self, domain: &[u8], message: &[u8], signature: &Signature) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        // Strict verification refuses malleable signatures and small-order keys.
        key.verify_strict(&domain_separated(domain, message), &signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "crate::hexbytes")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

/// A public key together with its role, as read from a `.pub` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolePublicKey {
    /// What the key is for.
    pub role: Role,
    /// The key.
    pub key: PublicKey,
}

impl RolePublicKey {
    /// The one-line text of a `.pub` file, with a trailing newline.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {} {}\n", self.role, self.key)
    }

    /// Parses the text of a `.pub` file.
    ///
    /// # Errors
    ///
    /// Text that is not one `shoal-public-key-v1 ROLE HEX` line (comments aside), an unknown
    /// role, or key bytes that are not a valid ed25519 public key.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let (role, bytes) = parse_key_line(text, PUBLIC_TAG, "public")?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::BadKeyBytes("public"))?;
        Ok(Self {
            role,
            key: PublicKey(bytes),
        })
    }

    /// The key, if it has the `expected` role.
    ///
    /// # Errors
    ///
    /// [`KeyError::WrongRole`] otherwise.
    pub fn expect_role(&self, expected: Role) -> Result<PublicKey, KeyError> {
        if self.role == expected {
            Ok(self.key)
        } else {
            Err(KeyError::WrongRole {
                expected,
                found: self.role,
            })
        }
    }
}

/// An ed25519 secret key with its role.
pub struct SecretKey {
    role: Role,
    key: ed25519_dalek::SigningKey,
}

impl SecretKey {
    /// Builds a key of `role` from a 32-byte seed. The caller supplies the randomness: use a
    /// cryptographically secure source.
    pub fn from_seed(role: Role, seed: [u8; 32]) -> Self {
        Self {
            role,
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The key's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The 32-byte seed, for callers that derive other key types from it (the node's libp2p
    /// identity). Treat it like the key file itself.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// The public key with its role, ready to be written as a `.pub` file.
    pub fn role_public(&self) -> RolePublicKey {
        RolePublicKey {
            role: self.role,
            key: self.public(),
        }
    }

    /// Signs `message` under `domain`, a constant naming what is being signed, so a signature
    /// made for one purpose can never be replayed as another.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> Signature {
        Signature(self.key.sign(&domain_separated(domain, message)).to_bytes())
    }

    /// The text of a secret key file, with a comment line and a trailing newline.
    pub fn to_text(&self) -> String {
        format!(
            "# shoal {} secret key: keep this file private (mode 0600)\n{SECRET_TAG} {} {}\n",
            self.role,
            self.role,
            hex::encode(self.key.to_bytes())
        )
    }

    /// Parses the text of a secret key file.
    ///
    /// # Errors
    ///
    /// Text that is not one `shoal-secret-key-v1 ROLE HEX` line (comments aside), or an unknown role.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        let (role, seed) = parse_key_line(text, SECRET_TAG, "secret")?;
        Ok(Self::from_seed(role, seed))
    }

    /// This key, if it has the `expected` role.
    ///
    /// # Errors
    ///
    /// [`KeyError::WrongRole`] otherwise.
    pub fn expect_role(self, expected: Role) -> Result<Self, KeyError> {
        if self.role == expected {
            Ok(self)
        } else {
            Err(KeyError::WrongRole {
                expected,
                found: self.role,
            })
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretKey({} {})",
            self.role,
            self.public().fingerprint()
        )
    }
}

fn parse_key_line(
    text: &str,
    tag: &'static str,
    expected: &'static str,
) -> Result<(Role, [u8; 32]), KeyError> {
    let malformed = KeyError::Malformed { expected, tag };
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or(malformed.clone())?;
    if lines.next().is_some() {
        return Err(malformed);
    }
    let mut fields = line.split_whitespace();
    let (Some(found_tag), Some(role), Some(hex_key), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed);
    };
    if found_tag != tag {
        return Err(malformed);
    }
    let role: Role = role.parse()?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes).map_err(|_| KeyError::BadKeyBytes(expected))?;
    Ok((role, bytes))
}

fn domain_separated(domain: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + message.len());
    out.extend_from_slice(domain);
    out.push(0);
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trips() {
        let secret = SecretKey::from_seed(Role::Publisher, [7; 32]);
        let parsed = SecretKey::from_text(&secret.to_text()).unwrap();
        assert_eq!(parsed.public(), secret.public());
        assert_eq!(parsed.role(), Role::Publisher);
        let public = RolePublicKey::from_text(&secret.role_public().to_text()).unwrap();
        assert_eq!(public, secret.role_public());
    }

    #[test]
    fn a_public_file_is_not_a_secret_file() {
        let secret = SecretKey::from_seed(Role::Root, [1; 32]);
        assert!(matches!(
            SecretKey::from_text(&secret.role_public().to_text()),
            Err(KeyError::Malformed { .. })
        ));
        assert!(SecretKey::from_text("").is_err());
        assert!(SecretKey::from_text("shoal-secret-key-v1 root abc").is_err());
        assert!(matches!(
            SecretKey::from_text("shoal-secret-key-v1 admin 00"),
            Err(KeyError::UnknownRole(_))
        ));
    }

    #[test]
    fn signatures_are_bound_to_key_domain_and_message() {
        let secret = SecretKey::from_seed(Role::Publisher, [3; 32]);
        let sig = secret.sign(b"shoal/test", b"hello");
        assert!(secret.public().verify(b"shoal/test", b"hello", &sig));
        assert!(!secret.public().verify(b"shoal/other", b"hello", &sig));
        assert!(!secret.public().verify(b"shoal/test", b"hellO", &sig));
        let other = SecretKey::from_seed(Role::Publisher, [4; 32]);
        assert!(!other.public().verify(b"shoal/test", b"hello", &sig));
    }

    #[test]
    fn wrong_role_is_refused() {
        let secret = SecretKey::from_seed(Role::Node, [5; 32]);
        assert_eq!(
            secret.expect_role(Role::Publisher).unwrap_err(),
            KeyError::WrongRole {
                expected: Role::Publisher,
                found: Role::Node
            }
        );
    }
}
