//! The trust document: which keys may publish releases, coordinate rollouts and operate the
//! coordinator.
//!
//! A root key, kept offline, signs a document naming the publisher and coordinator public keys,
//! and the operator keys with their scopes ([`crate::operator`]).
//! Machines are configured with the root public key (or accept the document's root on first use and
//! pin it); everything else is checked against the document.
//!
//! The file is JSON so an operator can read it; the signature covers the postcard encoding of
//! [`TrustBody`], which is deterministic, so reformatting the JSON does not break it. A document
//! that names no operator has the same encoding as one written before operators existed, so such
//! documents keep verifying.

use crate::keys::{PublicKey, Role, SecretKey, Signature};
use crate::operator::{OperatorGrant, Scope};
use serde::{Deserialize, Serialize};

/// The signature domain of trust documents.
const DOMAIN: &[u8] = b"shoal/trust/v1";

/// The only trust document format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The largest trust document accepted, in bytes.
pub const MAX_TRUST_BYTES: usize = 256 * 1024;

/// The most keys one role may list.
pub const MAX_KEYS_PER_ROLE: usize = 64;

/// What the root key signs. Unknown fields are refused: they would not be covered by the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBody {
    /// The document format, [`FORMAT_VERSION`].
    pub format: u32,
    /// The root public key that signs this document.
    pub root: PublicKey,
    /// Keys allowed to sign release manifests.
    pub publishers: Vec<PublicKey>,
    /// Keys allowed to sign rollout directives and admission certificates.
    pub coordinators: Vec<PublicKey>,
    /// When the document was signed, in seconds since the Unix epoch.
    pub issued_at_unix_secs: u64,
    /// Keys allowed to sign operator requests, with their scopes. Last, and left out when empty,
    /// so that a document without operators encodes as one from before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorGrant>,
}

/// A trust document as stored: the body and the root's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTrust {
    /// The signed content.
    pub body: TrustBody,
    /// The root key's signature over the postcard encoding of `body`.
    pub signature: Signature,
}

/// Why a trust document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    /// The document is larger than [`MAX_TRUST_BYTES`].
    #[error("trust document is {0} bytes, more than the limit of {MAX_TRUST_BYTES}")]
    TooLarge(usize),
    /// The document is not valid JSON of the expected shape.
    #[error("trust document is not valid: {0}")]
    Malformed(String),
    /// The document has a format this build does not know.
    #[error(
        "trust document format {0} is not supported (this build reads format {FORMAT_VERSION})"
    )]
    UnsupportedFormat(u32),
    /// A role lists no keys, or too many.
    #[error(
        "trust document lists {count} {role} keys: at least 1 and at most {MAX_KEYS_PER_ROLE} are allowed"
    )]
    KeyCount {
        /// The role.
        role: Role,
        /// How many keys it lists.
        count: usize,
    },
    /// An operator grant names no scope, repeats one, or names a key twice.
    #[error("trust document's operator {key}: {problem}")]
    BadOperator {
        /// The key's fingerprint.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The root's signature does not verify.
    #[error("trust document signature does not verify against its root key {0}")]
    BadSignature(String),
    /// The document is signed by another root than the one this machine trusts.
    #[error("trust document is signed by root {found}, but this machine trusts root {expected}")]
    UntrustedRoot {
        /// The pinned root's fingerprint.
        expected: String,
        /// The document's root fingerprint.
        found: String,
    },
}

/// A trust document whose signature has been checked. Only [`Trust::decode`] and
/// [`Trust::sign`] make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    signed: SignedTrust,
}

impl Trust {
    /// Signs a new trust document with the root key.
    ///
    /// # Errors
    ///
    /// [`TrustError::KeyCount`] if a role lists no keys or too many.
    ///
    /// # Panics
    ///
    /// If `root` is not a root-role key (a programming error: check the role when loading it).
    pub fn sign(
        root: &SecretKey,
        publishers: Vec<PublicKey>,
        coordinators: Vec<PublicKey>,
        issued_at_unix_secs: u64,
    ) -> Result<Self, TrustError> {
        Self::sign_with_operators(
            root,
            publishers,
            coordinators,
            Vec::new(),
            issued_at_unix_secs,
        )
    }

    /// Signs a new trust document that also names operator keys with their scopes.
    ///
    /// # Errors
    ///
    /// [`TrustError::KeyCount`] if a role lists no keys or too many, [`TrustError::BadOperator`]
    /// if a grant names no scope, repeats one or names a key twice.
    ///
    /// # Panics
    ///
    /// If `root` is not a root-role key.
    pub fn sign_with_operators(
        root: &SecretKey,
        publishers: Vec<PublicKey>,
        coordinators: Vec<PublicKey>,
        operators: Vec<OperatorGrant>,
        issued_at_unix_secs: u64,
    ) -> Result<Self, TrustError> {
        assert_eq!(
            root.role(),
            Role::Root,
            "trust documents are signed by a root key"
        );
        let body = TrustBody {
            format: FORMAT_VERSION,
            root: root.public(),
            publishers,
            coordinators,
            issued_at_unix_secs,
            operators,
        };
        check_key_counts(&body)?;
        let signature = root.sign(DOMAIN, &signed_bytes(&body));
        Ok(Self {
            signed: SignedTrust { body, signature },
        })
    }

    /// Parses and checks a trust document's text.
    ///
    /// # Errors
    ///
    /// A document that is too large, malformed, of an unknown format, lists a wrong number of keys,
    /// or whose signature does not verify against the root it names.
    pub fn decode(bytes: &[u8]) -> Result<Self, TrustError> {
        if bytes.len() > MAX_TRUST_BYTES {
            return Err(TrustError::TooLarge(bytes.len()));
        }
        let signed: SignedTrust =
            serde_json::from_slice(bytes).map_err(|e| TrustError::Malformed(e.to_string()))?;
        if signed.body.format != FORMAT_VERSION {
            return Err(TrustError::UnsupportedFormat(signed.body.format));
        }
        check_key_counts(&signed.body)?;
        if !signed
            .body
            .root
            .verify(DOMAIN, &signed_bytes(&signed.body), &signed.signature)
        {
            return Err(TrustError::BadSignature(signed.body.root.fingerprint()));
        }
        Ok(Self { signed })
    }

    /// The document as pretty JSON text, with a trailing newline.
    pub fn encode(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(&self.signed).expect("a trust document always serializes");
        text.push('\n');
        text
    }

    /// Checks that the document is signed by `expected_root`.
    ///
    /// # Errors
    ///
    /// [`TrustError::UntrustedRoot`] if it is signed by another root.
    pub fn require_root(&self, expected_root: &PublicKey) -> Result<(), TrustError> {
        if self.signed.body.root == *expected_root {
            Ok(())
        } else {
            Err(TrustError::UntrustedRoot {
                expected: expected_root.fingerprint(),
                found: self.signed.body.root.fingerprint(),
            })
        }
    }

    /// The signed content.
    pub fn body(&self) -> &TrustBody {
        &self.signed.body
    }

    /// Whether `key` may sign release manifests.
    pub fn is_publisher(&self, key: &PublicKey) -> bool {
        self.signed.body.publishers.contains(key)
    }

    /// Whether `key` may sign coordinator messages.
    pub fn is_coordinator(&self, key: &PublicKey) -> bool {
        self.signed.body.coordinators.contains(key)
    }

    /// The operator keys and their scopes.
    pub fn operators(&self) -> &[OperatorGrant] {
        &self.signed.body.operators
    }
}

fn check_key_counts(body: &TrustBody) -> Result<(), TrustError> {
    for (role, keys) in [
        (Role::Publisher, &body.publishers),
        (Role::Coordinator, &body.coordinators),
    ] {
        if keys.is_empty() || keys.len() > MAX_KEYS_PER_ROLE {
            return Err(TrustError::KeyCount {
                role,
                count: keys.len(),
            });
        }
    }
    if body.operators.len() > MAX_KEYS_PER_ROLE {
        return Err(TrustError::KeyCount {
            role: Role::Operator,
            count: body.operators.len(),
        });
    }
    for (i, grant) in body.operators.iter().enumerate() {
        let bad = |problem: String| TrustError::BadOperator {
            key: grant.key.fingerprint(),
            problem,
        };
        if grant.scopes.is_empty() {
            return Err(bad("it has no scope".into()));
        }
        if let Some(repeat) = Scope::ALL
            .iter()
            .find(|s| grant.scopes.iter().filter(|g| g == s).count() > 1)
        {
            return Err(bad(format!("scope {repeat} is listed twice")));
        }
        if body.operators[..i].iter().any(|g| g.key == grant.key) {
            return Err(bad("the key is listed twice".into()));
        }
    }
    Ok(())
}

fn signed_bytes(body: &TrustBody) -> Vec<u8> {
    postcard::to_stdvec(body).expect("a trust body always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (SecretKey, SecretKey, SecretKey) {
        (
            SecretKey::from_seed(Role::Root, [1; 32]),
            SecretKey::from_seed(Role::Publisher, [2; 32]),
            SecretKey::from_seed(Role::Coordinator, [3; 32]),
        )
    }

    fn signed(root: &SecretKey, publisher: &SecretKey, coordinator: &SecretKey) -> Trust {
        Trust::sign(
            root,
            vec![publisher.public()],
            vec![coordinator.public()],
            42,
        )
        .unwrap()
    }

    #[test]
    fn signed_document_round_trips_and_names_its_keys() {
        let (root, publisher, coordinator) = keys();
        let trust = signed(&root, &publisher, &coordinator);
        let decoded = Trust::decode(trust.encode().as_bytes()).unwrap();
        assert_eq!(decoded, trust);
        assert!(decoded.is_publisher(&publisher.public()));
        assert!(!decoded.is_publisher(&coordinator.public()));
        assert!(decoded.is_coordinator(&coordinator.public()));
        assert!(decoded.require_root(&root.public()).is_ok());
        assert!(decoded.require_root(&publisher.public()).is_err());
    }

    #[test]
    fn an_edited_document_fails_its_signature() {
        let (root, publisher, coordinator) = keys();
        let trust = signed(&root, &publisher, &coordinator);
        let intruder = SecretKey::from_seed(Role::Publisher, [9; 32]);
        let text = trust.encode().replace(
            &publisher.public().to_string(),
            &intruder.public().to_string(),
        );
        assert!(matches!(
            Trust::decode(text.as_bytes()),
            Err(TrustError::BadSignature(_))
        ));
    }

    #[test]
    fn garbage_and_oversize_documents_are_refused() {
        assert!(matches!(Trust::decode(b"{"), Err(TrustError::Malformed(_))));
        assert!(matches!(Trust::decode(b""), Err(TrustError::Malformed(_))));
        let big = vec![b' '; MAX_TRUST_BYTES + 1];
        assert_eq!(
            Trust::decode(&big),
            Err(TrustError::TooLarge(MAX_TRUST_BYTES + 1))
        );
    }

    #[test]
    fn unsigned_extra_fields_are_refused() {
        let (root, publisher, coordinator) = keys();
        let trust = signed(&root, &publisher, &coordinator);
        let text = trust
            .encode()
            .replacen("\"format\": 1,", "\"format\": 1, \"admin\": true,", 1);
        assert!(matches!(
            Trust::decode(text.as_bytes()),
            Err(TrustError::Malformed(_))
        ));
    }

    #[test]
    fn operators_are_signed_and_a_document_without_them_encodes_as_before() {
        let (root, publisher, coordinator) = keys();
        let operator = SecretKey::from_seed(Role::Operator, [5; 32]);
        let grant = OperatorGrant {
            key: operator.public(),
            scopes: vec![Scope::Release, Scope::Read],
        };
        let trust = Trust::sign_with_operators(
            &root,
            vec![publisher.public()],
            vec![coordinator.public()],
            vec![grant.clone()],
            42,
        )
        .unwrap();
        let decoded = Trust::decode(trust.encode().as_bytes()).unwrap();
        assert_eq!(decoded.operators(), std::slice::from_ref(&grant));
        let widened = trust.encode().replace("\"release\"", "\"admin\"");
        assert!(matches!(
            Trust::decode(widened.as_bytes()),
            Err(TrustError::BadSignature(_))
        ));
        // A document signed without the operators field still verifies.
        let plain = signed(&root, &publisher, &coordinator);
        assert!(!plain.encode().contains("operators"));
        let old_body = (
            FORMAT_VERSION,
            root.public(),
            vec![publisher.public()],
            vec![coordinator.public()],
            42u64,
        );
        assert_eq!(
            signed_bytes(plain.body()),
            postcard::to_stdvec(&old_body).unwrap()
        );
    }

    #[test]
    fn bad_operator_grants_are_refused() {
        let (root, publisher, coordinator) = keys();
        let key = SecretKey::from_seed(Role::Operator, [5; 32]).public();
        for (scopes, twice, says) in [
            (vec![], false, "no scope"),
            (vec![Scope::Read, Scope::Read], false, "listed twice"),
            (vec![Scope::Read], true, "key is listed twice"),
        ] {
            let mut grants = vec![OperatorGrant {
                key,
                scopes: scopes.clone(),
            }];
            if twice {
                grants.push(grants[0].clone());
            }
            let err = Trust::sign_with_operators(
                &root,
                vec![publisher.public()],
                vec![coordinator.public()],
                grants,
                1,
            )
            .unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn a_document_needs_keys_for_each_role() {
        let (root, publisher, _) = keys();
        assert!(matches!(
            Trust::sign(&root, vec![publisher.public()], vec![], 1),
            Err(TrustError::KeyCount {
                role: Role::Coordinator,
                count: 0
            })
        ));
    }
}
