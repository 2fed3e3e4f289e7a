//! Admission: which machines may join the mesh.
//!
//! A machine joins in three steps.
//!
//! 1. An administrator has a coordinator create an onboarding [`Token`] (`shoal token create`).
//!    The token is signed by the coordinator's key and carries what a new machine needs to find
//!    and trust the mesh: the coordinator's peer id and address, the trust root to pin, an expiry,
//!    and label constraints. Tokens are stateless: the coordinator keeps no table of them, so a
//!    restart keeps them valid, and one token admits any number of machines until it expires or
//!    is revoked ([`crate::revocation`]). Anyone holding a token can join until then, so treat it
//!    as a secret and keep its lifetime short ([`DEFAULT_TOKEN_TTL_SECS`]).
//! 2. The machine (`shoal node --token TOKEN`) connects to the coordinator and sends an
//!    [`AdmissionRequest`]: the token and its labels. The coordinator calls [`admit`] (or
//!    [`respond`], which wraps the outcome in an [`AdmissionResponse`]) with the peer id that the
//!    connection's handshake proved, never one taken from the request. If the token verifies and
//!    the labels meet its constraints, the coordinator issues a [`Certificate`] binding that peer
//!    id to those labels and sends it back with its trust document.
//! 3. The machine checks the reply with [`accept_admission`]: the trust document must be signed
//!    by the root the token pins, and the certificate must verify against that document for the
//!    machine's own peer id.
//!
//! From then on the machine presents its certificate to every peer, on the control plane and on
//! the data plane, and every peer checks it with [`Certificate::verify`] against its own trust
//! document and the peer id its connection proved. A peer without a valid certificate is refused
//! on both planes.
//!
//! A certificate may outlive the token it was issued against: the token limits when a machine can
//! join, the certificate how long it stays admitted ([`DEFAULT_CERTIFICATE_TTL_SECS`]), and a
//! node renews it before then ([`crate::renewal`]). It names the token, so that revoking the token
//! also shuts out the machines that joined with it.
//!
//! Nothing here reads a clock or does IO: every function that needs the time takes
//! `now_unix_secs`, and the transport is the caller's job. Token text is `shoal-token-1.`
//! followed by the unpadded base64url encoding of postcard bytes; certificates, requests and
//! responses are postcard bytes. Both decoders check a size limit before decoding anything.

use crate::keys::{PublicKey, Role, SecretKey, Signature};
use crate::labels::Labels;
use crate::revocation::Revocations;
use crate::trust::{MAX_TRUST_BYTES, Trust, TrustError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::str::FromStr;

/// How long a token admits machines by default: one hour.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 60 * 60;

/// How long a certificate is valid by default: 30 days.
pub const DEFAULT_CERTIFICATE_TTL_SECS: u64 = 30 * 24 * 60 * 60;

/// How far a peer's clock may run behind the coordinator's before a fresh certificate looks
/// not yet valid to it.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// The longest peer id accepted, in bytes. An ed25519 libp2p peer id is 38 bytes.
pub const MAX_PEER_ID_BYTES: usize = 64;

/// The longest token text accepted, in bytes (a token is ASCII, so also in characters). The
/// largest token this module can issue (a 64-byte peer id, 16 labels of the longest keys and
/// values) is about 3,100 characters.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// The largest encoded certificate accepted, in bytes. The largest certificate this module can
/// issue is about 2,300 bytes.
pub const MAX_CERTIFICATE_BYTES: usize = 4096;

/// The largest postcard-encoded [`AdmissionRequest`] a coordinator needs to accept, in bytes: the
/// longest token and the most labels. Transports use it as their frame limit.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The largest postcard-encoded [`AdmissionResponse`] a node needs to accept, in bytes: the
/// largest trust document and certificate, with room for the rest. Transports use it as their
/// frame limit.
pub const MAX_RESPONSE_BYTES: usize = MAX_TRUST_BYTES + MAX_CERTIFICATE_BYTES + 4096;

/// What every token's text starts with; the digit is the token format.
const TOKEN_PREFIX: &str = "shoal-token-1.";

/// What every token's text starts with, whatever its format.
const TOKEN_FAMILY_PREFIX: &str = "shoal-token-";

/// The signature domain of onboarding tokens.
const TOKEN_DOMAIN: &[u8] = b"shoal/onboarding-token/v1";

/// The signature domain of admission certificates.
const CERTIFICATE_DOMAIN: &[u8] = b"shoal/admission-certificate/v1";

/// The most characters of a coordinator's refusal reason a node keeps.
const MAX_REFUSAL_CHARS: usize = 1024;

/// How many characters of unrecognised input an error quotes.
const EXCERPT_CHARS: usize = 24;

/// Why a token, a certificate or an admission was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    /// The token text is longer than [`MAX_TOKEN_CHARS`].
    #[error(
        "token text is {0} bytes, more than the limit of {MAX_TOKEN_CHARS}: copy only the token printed by `shoal token create`"
    )]
    TokenTooLong(usize),
    /// The text does not start with the token prefix.
    #[error(
        "{0:?} does not look like a shoal token: tokens start with \"shoal-token-1.\" and come from `shoal token create`"
    )]
    NotAToken(String),
    /// The text is a token of a format this build does not read.
    #[error(
        "token {0:?} does not start with \"shoal-token-1.\", the only token format this build reads: it is incomplete, or was created by another version of shoal; copy it again, or create a token with `shoal token create` on a coordinator running this version"
    )]
    UnsupportedTokenFormat(String),
    /// The text after the prefix is not base64url.
    #[error("token is damaged: {0}; copy the whole token again")]
    TokenEncoding(String),
    /// The decoded token is truncated, has trailing bytes, or has fields out of range.
    #[error(
        "token is truncated or corrupt: {0}; copy the whole token again, or create a new one with `shoal token create`"
    )]
    CorruptToken(String),
    /// The token's issuer is not a coordinator in the trust document.
    #[error(
        "token was issued by key {0}, which the trust document does not name as a coordinator: create a new token with `shoal token create` on a current coordinator"
    )]
    UnknownTokenIssuer(String),
    /// The token's signature does not verify.
    #[error(
        "token signature by {0} does not verify: the token was altered; copy it again or create a new one with `shoal token create`"
    )]
    BadTokenSignature(String),
    /// The token pins another trust root than the one that signed the trust document.
    #[error(
        "token pins trust root {token_root}, but the trust document is signed by root {trust_root}: the token belongs to another mesh"
    )]
    TokenForAnotherRoot {
        /// The fingerprint of the root the token pins.
        token_root: String,
        /// The fingerprint of the trust document's root.
        trust_root: String,
    },
    /// The token's expiry has passed.
    #[error(
        "token expired at {} (unix time {expires_unix_secs}), {} s ago: create a new token with `shoal token create`",
        utc_text(*.expires_unix_secs),
        .now_unix_secs.saturating_sub(*.expires_unix_secs)
    )]
    TokenExpired {
        /// When the token expired, in seconds since the Unix epoch.
        expires_unix_secs: u64,
        /// The time it was checked at, in seconds since the Unix epoch.
        now_unix_secs: u64,
    },
    /// The node lacks a label the token requires.
    #[error(
        "the token requires label {key}={required}, but this node has no {key} label: start it with --labels including {key}={required}"
    )]
    LabelMissing {
        /// The label's key.
        key: String,
        /// The value the token requires.
        required: String,
    },
    /// The node has a label with another value than the token requires.
    #[error(
        "the token requires label {key}={required}, but this node has {key}={found}: use a token created for {key}={found}, or fix the node's --labels"
    )]
    LabelMismatch {
        /// The label's key.
        key: String,
        /// The value the token requires.
        required: String,
        /// The node's value.
        found: String,
    },
    /// A peer id is longer than [`MAX_PEER_ID_BYTES`].
    #[error("peer id is {0} bytes, more than the limit of {MAX_PEER_ID_BYTES}")]
    PeerIdTooLong(usize),
    /// The key asked to issue a certificate is not a coordinator in its own trust document, so no
    /// peer would accept the certificate.
    #[error(
        "coordinator key {0} is not named as a coordinator by the trust document: sign a trust document naming it with `shoal trust init --coordinator`"
    )]
    NotACoordinator(String),
    /// The certificate is larger than [`MAX_CERTIFICATE_BYTES`].
    #[error("certificate is {0} bytes, more than the limit of {MAX_CERTIFICATE_BYTES}")]
    CertificateTooLarge(usize),
    /// The token, or the token a certificate was issued against, is on the revocation list.
    #[error("token {0} has been revoked: ask the mesh's administrator for a new one")]
    TokenRevoked(String),
    /// The certificate bytes are truncated, have trailing bytes, or have fields out of range.
    #[error("certificate is truncated or corrupt: {0}")]
    CorruptCertificate(String),
    /// The certificate's issuer is not a coordinator in the trust document.
    #[error(
        "certificate was issued by key {0}, which the trust document does not name as a coordinator: the node it belongs to must join again with a new token from `shoal token create`"
    )]
    UnknownCertificateIssuer(String),
    /// The certificate's signature does not verify.
    #[error(
        "certificate signature by {0} does not verify: the certificate was altered or signed with another key"
    )]
    BadCertificateSignature(String),
    /// The certificate names another peer than the one presenting it.
    #[error(
        "certificate belongs to another peer ({certificate_peer_id}), not to the connected peer {peer_id}"
    )]
    CertificateForAnotherPeer {
        /// The peer id in the certificate, in hex.
        certificate_peer_id: String,
        /// The connected peer's id, in hex.
        peer_id: String,
    },
    /// The certificate's validity starts more than [`MAX_CLOCK_SKEW_SECS`] in the future.
    #[error(
        "certificate is valid from {} (unix time {issued_unix_secs}), but this machine's clock says {} (unix time {now_unix_secs}): check the clocks of both machines (NTP)",
        utc_text(*.issued_unix_secs),
        utc_text(*.now_unix_secs)
    )]
    CertificateNotYetValid {
        /// When the certificate was issued, in seconds since the Unix epoch.
        issued_unix_secs: u64,
        /// The time it was checked at, in seconds since the Unix epoch.
        now_unix_secs: u64,
    },
    /// The certificate's expiry has passed.
    #[error(
        "certificate expired at {} (unix time {expires_unix_secs}), {} s ago: the node it belongs to must join again with a new token from `shoal token create`",
        utc_text(*.expires_unix_secs),
        .now_unix_secs.saturating_sub(*.expires_unix_secs)
    )]
    CertificateExpired {
        /// When the certificate expired, in seconds since the Unix epoch.
        expires_unix_secs: u64,
        /// The time it was checked at, in seconds since the Unix epoch.
        now_unix_secs: u64,
    },
    /// The coordinator refused the admission, for the reason it gave (control characters
    /// replaced, at most 1024 characters).
    #[error("the coordinator refused to admit this node: {0}")]
    Refused(String),
    /// The coordinator's trust document is invalid or signed by another root than the token pins.
    #[error("the coordinator's trust document was refused: {0}")]
    Trust(#[from] TrustError),
}

/// What a token says, and what its signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The coordinator's libp2p peer id, at most [`MAX_PEER_ID_BYTES`] bytes: the node checks it
    /// when it connects.
    pub coordinator_peer_id: Vec<u8>,
    /// Where the coordinator listens.
    pub coordinator_addr: SocketAddr,
    /// The trust root the node pins: the trust document it receives must be signed by this key.
    pub root: PublicKey,
    /// The coordinator key that signs the token. [`Token::issue`] sets it.
    pub issuer: PublicKey,
    /// A random id, so logs can tell which token admitted a machine.
    #[serde(with = "crate::hexbytes")]
    pub id: [u8; 16],
    /// Until when the token admits machines, in seconds since the Unix epoch.
    pub expires_unix_secs: u64,
    /// Labels a node redeeming this token must carry, each with the same value. Empty means no
    /// constraint.
    pub labels: Labels,
}

/// A signed onboarding token. Make one with [`Token::issue`], pass it around as
/// [`Token::encode`] text, read it back with [`Token::decode`] and check it with
/// [`Token::verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    claims: TokenClaims,
    signature: Signature,
}

impl Token {
    /// Signs `claims` with a coordinator key, setting `claims.issuer` to that key.
    ///
    /// # Panics
    ///
    /// If `key` is not a coordinator key, or `claims.coordinator_peer_id` is longer than
    /// [`MAX_PEER_ID_BYTES`]: both come from the coordinator's own configuration, so either is a
    /// bug in the caller.
    pub fn issue(key: &SecretKey, mut claims: TokenClaims) -> Self {
        assert_eq!(
            key.role(),
            Role::Coordinator,
            "tokens are signed by a coordinator key"
        );
        assert!(
            claims.coordinator_peer_id.len() <= MAX_PEER_ID_BYTES,
            "a peer id is at most {MAX_PEER_ID_BYTES} bytes"
        );
        claims.issuer = key.public();
        let signature = key.sign(TOKEN_DOMAIN, &token_signed_bytes(&claims));
        Self { claims, signature }
    }

    /// What the token says. Nothing is checked until [`verify`](Self::verify) succeeds.
    pub fn claims(&self) -> &TokenClaims {
        &self.claims
    }

    /// The token's text: `shoal-token-1.` and the base64url encoding of its postcard bytes.
    pub fn encode(&self) -> String {
        let bytes = postcard::to_stdvec(self).expect("a token always serializes");
        let mut text = String::from(TOKEN_PREFIX);
        base64url_encode(&bytes, &mut text);
        text
    }

    /// Parses token text, ignoring surrounding whitespace. The signature is not checked yet:
    /// call [`verify`](Self::verify).
    ///
    /// # Errors
    ///
    /// Text longer than [`MAX_TOKEN_CHARS`] (checked first), without the token prefix, of another
    /// token format, not base64url, or not a complete token.
    pub fn decode(text: &str) -> Result<Self, AdmissionError> {
        if text.len() > MAX_TOKEN_CHARS {
            return Err(AdmissionError::TokenTooLong(text.len()));
        }
        let text = text.trim();
        let Some(encoded) = text.strip_prefix(TOKEN_PREFIX) else {
            return Err(if text.starts_with(TOKEN_FAMILY_PREFIX) {
                AdmissionError::UnsupportedTokenFormat(excerpt(text))
            } else {
                AdmissionError::NotAToken(excerpt(text))
            });
        };
        let bytes = base64url_decode(encoded).map_err(|e| {
            AdmissionError::TokenEncoding(match e {
                Base64Error::BadChar { offset, found } => format!(
                    "character {found:?} at position {} is not base64url",
                    TOKEN_PREFIX.len() + offset + 1
                ),
                Base64Error::BadLength => "it ends in the middle of a character group".into(),
                Base64Error::StrayBits => "its last character has stray bits".into(),
            })
        })?;
        let (token, trailing): (Token, _) = postcard::take_from_bytes(&bytes)
            .map_err(|e| AdmissionError::CorruptToken(e.to_string()))?;
        if !trailing.is_empty() {
            return Err(AdmissionError::CorruptToken(format!(
                "{} unexpected bytes after the end",
                trailing.len()
            )));
        }
        let peer_id_bytes = token.claims.coordinator_peer_id.len();
        if peer_id_bytes > MAX_PEER_ID_BYTES {
            return Err(AdmissionError::CorruptToken(format!(
                "the coordinator peer id is {peer_id_bytes} bytes, more than {MAX_PEER_ID_BYTES}"
            )));
        }
        Ok(token)
    }

    /// Checks the token against `trust` at `now_unix_secs`: its issuer is a coordinator in the
    /// document (any coordinator, not necessarily the one checking), its signature verifies, it
    /// pins the document's root, and it has not expired. Returns the claims it vouches for.
    ///
    /// # Errors
    ///
    /// [`AdmissionError::UnknownTokenIssuer`], [`AdmissionError::BadTokenSignature`],
    /// [`AdmissionError::TokenForAnotherRoot`] or [`AdmissionError::TokenExpired`].
    pub fn verify(
        &self,
        trust: &Trust,
        now_unix_secs: u64,
    ) -> Result<&TokenClaims, AdmissionError> {
        let claims = &self.claims;
        if !trust.is_coordinator(&claims.issuer) {
            return Err(AdmissionError::UnknownTokenIssuer(
                claims.issuer.fingerprint(),
            ));
        }
        if !claims
            .issuer
            .verify(TOKEN_DOMAIN, &token_signed_bytes(claims), &self.signature)
        {
            return Err(AdmissionError::BadTokenSignature(
                claims.issuer.fingerprint(),
            ));
        }
        let trust_root = trust.body().root;
        if claims.root != trust_root {
            return Err(AdmissionError::TokenForAnotherRoot {
                token_root: claims.root.fingerprint(),
                trust_root: trust_root.fingerprint(),
            });
        }
        if now_unix_secs > claims.expires_unix_secs {
            return Err(AdmissionError::TokenExpired {
                expires_unix_secs: claims.expires_unix_secs,
                now_unix_secs,
            });
        }
        Ok(claims)
    }
}

impl FromStr for Token {
    type Err = AdmissionError;

    /// [`Token::decode`], so a command line can take a token as an argument.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::decode(text)
    }
}

/// A coordinator's statement that a peer id belongs to the mesh, with the labels it joined with.
/// An admitted node presents it to every peer, which checks it with [`verify`](Self::verify).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    peer_id: Vec<u8>,
    labels: Labels,
    issued_unix_secs: u64,
    expires_unix_secs: u64,
    issuer: PublicKey,
    signature: Signature,
    /// The token it was issued against (none for a coordinator's own certificate and for
    /// certificates issued before they named their token). Last, so that [`Certificate::decode`]
    /// can tell the older encoding without it.
    token_id: Option<[u8; 16]>,
}

/// A certificate as encoded before certificates named their token.
#[derive(Deserialize)]
struct CertificateWithoutToken {
    peer_id: Vec<u8>,
    labels: Labels,
    issued_unix_secs: u64,
    expires_unix_secs: u64,
    issuer: PublicKey,
    signature: Signature,
}

/// What a certificate's signature covers: every field but the signature. Without a token id it
/// encodes as it did before certificates had one, so older certificates keep verifying.
#[derive(Serialize)]
struct CertificateBody<'a> {
    peer_id: &'a [u8],
    labels: &'a Labels,
    issued_unix_secs: u64,
    expires_unix_secs: u64,
    issuer: &'a PublicKey,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<&'a [u8; 16]>,
}

impl Certificate {
    /// Signs a certificate for `peer_id` with `labels`, valid from `issued_unix_secs` to
    /// `expires_unix_secs`, issued against token `token_id` (none for the coordinator's own).
    /// Coordinators normally call [`admit`] or [`renew`](crate::renewal::renew) instead.
    ///
    /// # Panics
    ///
    /// If `key` is not a coordinator key or `peer_id` is longer than [`MAX_PEER_ID_BYTES`]
    /// ([`admit`] checks the length first and returns an error).
    pub fn issue(
        key: &SecretKey,
        peer_id: Vec<u8>,
        labels: Labels,
        issued_unix_secs: u64,
        expires_unix_secs: u64,
        token_id: Option<[u8; 16]>,
    ) -> Self {
        assert_eq!(
            key.role(),
            Role::Coordinator,
            "certificates are signed by a coordinator key"
        );
        assert!(
            peer_id.len() <= MAX_PEER_ID_BYTES,
            "a peer id is at most {MAX_PEER_ID_BYTES} bytes"
        );
        let mut certificate = Self {
            peer_id,
            labels,
            issued_unix_secs,
            expires_unix_secs,
            issuer: key.public(),
            signature: Signature([0; 64]),
            token_id,
        };
        certificate.signature = key.sign(CERTIFICATE_DOMAIN, &certificate.signed_bytes());
        certificate
    }

    /// The peer id the certificate admits.
    pub fn peer_id(&self) -> &[u8] {
        &self.peer_id
    }

    /// The labels the peer joined with.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// When the certificate was issued, in seconds since the Unix epoch.
    pub fn issued_unix_secs(&self) -> u64 {
        self.issued_unix_secs
    }

    /// When the certificate expires, in seconds since the Unix epoch.
    pub fn expires_unix_secs(&self) -> u64 {
        self.expires_unix_secs
    }

    /// The coordinator key that signed the certificate.
    pub fn issuer(&self) -> &PublicKey {
        &self.issuer
    }

    /// The token it was issued against, if it names one.
    pub fn token_id(&self) -> Option<[u8; 16]> {
        self.token_id
    }

    /// Checks that the token it was issued against is not revoked.
    ///
    /// # Errors
    ///
    /// [`AdmissionError::TokenRevoked`] if it is.
    pub fn check_revocations(&self, revocations: &Revocations) -> Result<(), AdmissionError> {
        match self.token_id {
            Some(id) if revocations.is_revoked(&id) => {
                Err(AdmissionError::TokenRevoked(hex::encode(id)))
            }
            _ => Ok(()),
        }
    }

    /// Whether it is time to renew it: less than a third of its lifetime is left.
    pub fn is_renewal_due(&self, now_unix_secs: u64) -> bool {
        let lifetime = self.expires_unix_secs.saturating_sub(self.issued_unix_secs);
        now_unix_secs >= self.expires_unix_secs.saturating_sub(lifetime / 3)
    }

    /// The certificate's postcard bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a certificate always serializes")
    }

    /// Parses a certificate's bytes. The signature is not checked yet: call
    /// [`verify`](Self::verify).
    ///
    /// # Errors
    ///
    /// More than [`MAX_CERTIFICATE_BYTES`] (checked first), truncated or trailing bytes, invalid
    /// labels, or a peer id longer than [`MAX_PEER_ID_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Self, AdmissionError> {
        if bytes.len() > MAX_CERTIFICATE_BYTES {
            return Err(AdmissionError::CertificateTooLarge(bytes.len()));
        }
        let (certificate, trailing): (Certificate, _) = match postcard::take_from_bytes(bytes) {
            Ok(decoded) => decoded,
            Err(e) => match postcard::take_from_bytes::<CertificateWithoutToken>(bytes) {
                Ok((c, trailing)) => (
                    Certificate {
                        peer_id: c.peer_id,
                        labels: c.labels,
                        issued_unix_secs: c.issued_unix_secs,
                        expires_unix_secs: c.expires_unix_secs,
                        issuer: c.issuer,
                        signature: c.signature,
                        token_id: None,
                    },
                    trailing,
                ),
                Err(_) => return Err(AdmissionError::CorruptCertificate(e.to_string())),
            },
        };
        if !trailing.is_empty() {
            return Err(AdmissionError::CorruptCertificate(format!(
                "{} unexpected bytes after the end",
                trailing.len()
            )));
        }
        if certificate.peer_id.len() > MAX_PEER_ID_BYTES {
            return Err(AdmissionError::CorruptCertificate(format!(
                "the peer id is {} bytes, more than {MAX_PEER_ID_BYTES}",
                certificate.peer_id.len()
            )));
        }
        Ok(certificate)
    }

    /// Checks that the certificate admits `peer_id` (the id the connection proved) at
    /// `now_unix_secs`: its issuer is a coordinator in `trust`, its signature verifies, it names
    /// `peer_id`, and `now_unix_secs` lies between its issue time, less
    /// [`MAX_CLOCK_SKEW_SECS`], and its expiry.
    ///
    /// # Errors
    ///
    /// [`AdmissionError::UnknownCertificateIssuer`], [`AdmissionError::BadCertificateSignature`],
    /// [`AdmissionError::CertificateForAnotherPeer`], [`AdmissionError::CertificateNotYetValid`]
    /// or [`AdmissionError::CertificateExpired`].
    pub fn verify(
        &self,
        trust: &Trust,
        peer_id: &[u8],
        now_unix_secs: u64,
    ) -> Result<(), AdmissionError> {
        if !trust.is_coordinator(&self.issuer) {
            return Err(AdmissionError::UnknownCertificateIssuer(
                self.issuer.fingerprint(),
            ));
        }
        if !self
            .issuer
            .verify(CERTIFICATE_DOMAIN, &self.signed_bytes(), &self.signature)
        {
            return Err(AdmissionError::BadCertificateSignature(
                self.issuer.fingerprint(),
            ));
        }
        if self.peer_id != peer_id {
            return Err(AdmissionError::CertificateForAnotherPeer {
                certificate_peer_id: hex::encode(&self.peer_id),
                peer_id: hex::encode(peer_id),
            });
        }
        if now_unix_secs < self.issued_unix_secs.saturating_sub(MAX_CLOCK_SKEW_SECS) {
            return Err(AdmissionError::CertificateNotYetValid {
                issued_unix_secs: self.issued_unix_secs,
                now_unix_secs,
            });
        }
        if now_unix_secs > self.expires_unix_secs {
            return Err(AdmissionError::CertificateExpired {
                expires_unix_secs: self.expires_unix_secs,
                now_unix_secs,
            });
        }
        Ok(())
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let body = CertificateBody {
            peer_id: &self.peer_id,
            labels: &self.labels,
            issued_unix_secs: self.issued_unix_secs,
            expires_unix_secs: self.expires_unix_secs,
            issuer: &self.issuer,
            token_id: self.token_id.as_ref(),
        };
        postcard::to_stdvec(&body).expect("a certificate body always serializes")
    }
}

/// What a joining node sends the coordinator. Its peer id is not in it: the coordinator takes that
/// from the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionRequest {
    /// The onboarding token's text, as [`Token::encode`] writes it.
    pub token: String,
    /// The labels the node will carry.
    pub labels: Labels,
}

/// The coordinator's answer to an [`AdmissionRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmissionResponse {
    /// The node is admitted.
    Admitted {
        /// The node's certificate.
        certificate: Certificate,
        /// The coordinator's trust document, as [`Trust::encode`] writes it.
        trust: String,
    },
    /// The node is not admitted.
    Refused {
        /// Why, as a message for the node's operator.
        reason: String,
    },
}

/// Admits the node behind a connection: decodes and verifies the request's token against `trust`
/// at `now_unix_secs`, checks the request's labels against the token's constraints, and issues a
/// certificate for `peer_id` with the request's labels, valid from now for
/// `certificate_ttl_secs`. The certificate may outlive the token.
///
/// `peer_id` must be the id the connection's handshake proved, never one the peer merely claims.
/// The token may have been issued by any coordinator key in `trust`, not only `key`.
///
/// # Errors
///
/// [`AdmissionError::NotACoordinator`] if `key` is not a coordinator in `trust`;
/// [`AdmissionError::PeerIdTooLong`]; any error of [`Token::decode`] or [`Token::verify`];
/// [`AdmissionError::LabelMissing`] or [`AdmissionError::LabelMismatch`] if the labels do not meet
/// the token's constraints; [`AdmissionError::TokenRevoked`] if `revocations` lists the token.
///
/// # Panics
///
/// If `key` is not a coordinator-role key (a bug: check the role when loading it).
pub fn admit(
    key: &SecretKey,
    trust: &Trust,
    revocations: &Revocations,
    request: &AdmissionRequest,
    peer_id: &[u8],
    now_unix_secs: u64,
    certificate_ttl_secs: u64,
) -> Result<Certificate, AdmissionError> {
    assert_eq!(
        key.role(),
        Role::Coordinator,
        "certificates are signed by a coordinator key"
    );
    if !trust.is_coordinator(&key.public()) {
        return Err(AdmissionError::NotACoordinator(key.public().fingerprint()));
    }
    if peer_id.len() > MAX_PEER_ID_BYTES {
        return Err(AdmissionError::PeerIdTooLong(peer_id.len()));
    }
    let token = Token::decode(&request.token)?;
    let claims = token.verify(trust, now_unix_secs)?;
    if revocations.is_revoked(&claims.id) {
        return Err(AdmissionError::TokenRevoked(hex::encode(claims.id)));
    }
    for (label, required) in claims.labels.iter() {
        match request.labels.get(label) {
            Some(found) if found == required => {}
            Some(found) => {
                return Err(AdmissionError::LabelMismatch {
                    key: label.to_owned(),
                    required: required.to_owned(),
                    found: found.to_owned(),
                });
            }
            None => {
                return Err(AdmissionError::LabelMissing {
                    key: label.to_owned(),
                    required: required.to_owned(),
                });
            }
        }
    }
    Ok(Certificate::issue(
        key,
        peer_id.to_vec(),
        request.labels.clone(),
        now_unix_secs,
        now_unix_secs.saturating_add(certificate_ttl_secs),
        Some(claims.id),
    ))
}

/// [`admit`], with the outcome as the response to send: the certificate and `trust`'s text, or
/// the error's message as the refusal reason.
///
/// # Panics
///
/// As [`admit`].
#[must_use]
pub fn respond(
    key: &SecretKey,
    trust: &Trust,
    revocations: &Revocations,
    request: &AdmissionRequest,
    peer_id: &[u8],
    now_unix_secs: u64,
    certificate_ttl_secs: u64,
) -> AdmissionResponse {
    match admit(
        key,
        trust,
        revocations,
        request,
        peer_id,
        now_unix_secs,
        certificate_ttl_secs,
    ) {
        Ok(certificate) => AdmissionResponse::Admitted {
            certificate,
            trust: trust.encode(),
        },
        Err(error) => AdmissionResponse::Refused {
            reason: error.to_string(),
        },
    }
}

/// The node's side: checks the coordinator's `response` to a request made with `token`. The trust
/// document must be valid and signed by the root the token pins, and the certificate must verify
/// against it for `own_peer_id` at `now_unix_secs`. Returns the certificate to present to peers
/// and the trust document to check them with.
///
/// # Errors
///
/// [`AdmissionError::Refused`] with the coordinator's reason; [`AdmissionError::Trust`] for a
/// trust document that is invalid or signed by another root; any error of
/// [`Certificate::verify`].
pub fn accept_admission(
    response: AdmissionResponse,
    token: &Token,
    own_peer_id: &[u8],
    now_unix_secs: u64,
) -> Result<(Certificate, Trust), AdmissionError> {
    let (certificate, trust) = match response {
        AdmissionResponse::Admitted { certificate, trust } => (certificate, trust),
        AdmissionResponse::Refused { reason } => {
            // The reason is the coordinator's text, shown to an operator: keep it printable.
            let reason = reason
                .chars()
                .take(MAX_REFUSAL_CHARS)
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect();
            return Err(AdmissionError::Refused(reason));
        }
    };
    let trust = Trust::decode(trust.as_bytes())?;
    trust.require_root(&token.claims().root)?;
    certificate.verify(&trust, own_peer_id, now_unix_secs)?;
    Ok((certificate, trust))
}

fn token_signed_bytes(claims: &TokenClaims) -> Vec<u8> {
    postcard::to_stdvec(claims).expect("token claims always serialize")
}

/// The start of untrusted text, for an error message.
fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// `unix_secs` as an ISO 8601 UTC time, e.g. `2024-06-01T12:00:00Z`.
fn utc_text(unix_secs: u64) -> String {
    // Howard Hinnant's civil_from_days, shifted so every quantity stays non-negative.
    let days = unix_secs / 86_400 + 719_468;
    let secs_of_day = unix_secs % 86_400;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Appends the unpadded base64url encoding of `bytes` to `out`.
fn base64url_encode(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        // A chunk of n bytes carries 8n bits, which take n + 1 characters.
        for i in 0..=chunk.len() {
            let sextet = (group >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(BASE64URL[sextet as usize]));
        }
    }
}

/// Why text is not unpadded, canonical base64url.
#[derive(Debug, PartialEq, Eq)]
enum Base64Error {
    /// A character outside the alphabet, at this byte offset.
    BadChar { offset: usize, found: char },
    /// A final group of one character, which cannot hold a byte.
    BadLength,
    /// The final character has bits set that no byte uses.
    StrayBits,
}

/// Decodes unpadded base64url, refusing non-canonical text so every token has one spelling.
fn base64url_decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    if let Some((offset, found)) = text
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(Base64Error::BadChar { offset, found });
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.as_bytes().chunks(4) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | sextet(c) << (18 - 6 * i));
        let byte_count = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return Err(Base64Error::BadLength),
        };
        if group & (0xff_ffff >> (8 * byte_count)) != 0 {
            return Err(Base64Error::StrayBits);
        }
        out.extend(group.to_be_bytes()[1..=byte_count].iter().copied());
    }
    Ok(out)
}

/// The value of a base64url character already checked to be in the alphabet.
fn sextet(c: u8) -> u32 {
    u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_750_000_000;
    const NODE: &[u8] = b"node-peer-id";

    struct Mesh {
        root: SecretKey,
        coordinator: SecretKey,
        trust: Trust,
    }

    /// A mesh built the way the trust module's tests build one.
    fn mesh() -> Mesh {
        let root = SecretKey::from_seed(Role::Root, [1; 32]);
        let publisher = SecretKey::from_seed(Role::Publisher, [2; 32]);
        let coordinator = SecretKey::from_seed(Role::Coordinator, [3; 32]);
        let trust = Trust::sign(
            &root,
            vec![publisher.public()],
            vec![coordinator.public()],
            42,
        )
        .unwrap();
        Mesh {
            root,
            coordinator,
            trust,
        }
    }

    fn labels(text: &str) -> Labels {
        text.parse().unwrap()
    }

    fn claims(mesh: &Mesh, constraints: &str) -> TokenClaims {
        TokenClaims {
            coordinator_peer_id: vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20, 7, 7, 7],
            coordinator_addr: "192.0.2.10:7400".parse().unwrap(),
            root: mesh.root.public(),
            // Token::issue replaces it with the signing key.
            issuer: mesh.root.public(),
            id: [9; 16],
            expires_unix_secs: NOW + DEFAULT_TOKEN_TTL_SECS,
            labels: labels(constraints),
        }
    }

    fn request(token: &Token, node_labels: &str) -> AdmissionRequest {
        AdmissionRequest {
            token: token.encode(),
            labels: labels(node_labels),
        }
    }

    fn certificate(mesh: &Mesh) -> Certificate {
        Certificate::issue(
            &mesh.coordinator,
            NODE.to_vec(),
            labels("region=eu1,rack=7"),
            NOW,
            NOW + DEFAULT_CERTIFICATE_TTL_SECS,
            Some([9; 16]),
        )
    }

    #[test]
    fn a_revoked_token_admits_no_one_and_its_certificates_are_refused() {
        let mesh = mesh();
        let token = Token::issue(&mesh.coordinator, claims(&mesh, ""));
        let certificate = admit(
            &mesh.coordinator,
            &mesh.trust,
            &Revocations::default(),
            &request(&token, ""),
            NODE,
            NOW,
            DEFAULT_CERTIFICATE_TTL_SECS,
        )
        .unwrap();
        assert_eq!(certificate.token_id(), Some(token.claims().id));
        let mut revocations = Revocations::default();
        revocations
            .revoke(token.claims().id, NOW + 100, NOW)
            .unwrap();
        let refused = admit(
            &mesh.coordinator,
            &mesh.trust,
            &revocations,
            &request(&token, ""),
            NODE,
            NOW,
            DEFAULT_CERTIFICATE_TTL_SECS,
        );
        assert!(matches!(refused, Err(AdmissionError::TokenRevoked(_))));
        assert!(matches!(
            certificate.check_revocations(&revocations),
            Err(AdmissionError::TokenRevoked(_))
        ));
        assert!(
            certificate
                .check_revocations(&Revocations::default())
                .is_ok()
        );
    }

    #[test]
    fn a_certificate_without_a_token_id_decodes_and_verifies_as_before() {
        let mesh = mesh();
        let certificate = Certificate::issue(
            &mesh.coordinator,
            NODE.to_vec(),
            labels("region=eu1"),
            NOW,
            NOW + 10,
            None,
        );
        // The encoding certificates had before they named their token: no trailing field.
        let mut older = certificate.encode();
        assert_eq!(older.pop(), Some(0), "None is one zero byte");
        let decoded = Certificate::decode(&older).unwrap();
        assert_eq!(decoded, certificate);
        decoded.verify(&mesh.trust, NODE, NOW).unwrap();
        let mut trailing = older.clone();
        trailing.extend_from_slice(&[0, 0]);
        assert!(Certificate::decode(&trailing).is_err());
    }

    #[test]
    fn renewal_is_due_in_the_last_third_of_a_lifetime() {
        let mesh = mesh();
        let certificate = Certificate::issue(
            &mesh.coordinator,
            NODE.to_vec(),
            Labels::default(),
            0,
            300,
            None,
        );
        assert!(!certificate.is_renewal_due(199));
        assert!(certificate.is_renewal_due(200));
    }

    #[test]
    fn token_text_round_trips_and_verifies() {
        let mesh = mesh();
        let token = Token::issue(&mesh.coordinator, claims(&mesh, "region=eu1"));
        let text = token.encode();
        assert!(text.starts_with("shoal-token-1."), "{text}");
        let decoded = Token::decode(&format!("  {text}\n")).unwrap();
        assert_eq!(decoded, token);
        assert_eq!(text.parse::<Token>().unwrap(), token);
        let verified = decoded.verify(&mesh.trust, NOW).unwrap();
        assert_eq!(verified.issuer, mesh.coordinator.public());
        assert_eq!(
            verified.coordinator_addr,
            "192.0.2.10:7400".parse().unwrap()
        );
    }

    #[test]
    fn a_typical_token_is_short_enough_to_paste() {
        let mesh = mesh();
        let mut claims = claims(&mesh, "region=eu1");
        claims.coordinator_peer_id = vec![1; 38];
        let text = Token::issue(&mesh.coordinator, claims).encode();
        assert!(text.len() < 330, "{} characters: {text}", text.len());
    }

    #[test]
    fn the_largest_token_and_certificate_fit_their_limits() {
        let mesh = mesh();
        let most_labels: Vec<String> = (0..crate::labels::MAX_LABELS)
            .map(|i| format!("{:k<64}={:v<64}", format!("k{i}"), ""))
            .collect();
        let most_labels = labels(&most_labels.join(","));
        let claims = TokenClaims {
            coordinator_peer_id: vec![0xff; MAX_PEER_ID_BYTES],
            coordinator_addr: "[ffff::ffff]:65535".parse().unwrap(),
            expires_unix_secs: u64::MAX,
            labels: most_labels.clone(),
            ..claims(&mesh, "")
        };
        let token = Token::issue(&mesh.coordinator, claims);
        assert!(token.encode().len() <= MAX_TOKEN_CHARS);
        let request = AdmissionRequest {
            token: token.encode(),
            labels: most_labels.clone(),
        };
        let request_bytes = postcard::to_stdvec(&request).unwrap();
        assert!(request_bytes.len() <= MAX_REQUEST_BYTES);
        let certificate = Certificate::issue(
            &mesh.coordinator,
            vec![0xff; MAX_PEER_ID_BYTES],
            most_labels,
            u64::MAX,
            u64::MAX,
            Some([0xff; 16]),
        );
        assert!(certificate.encode().len() <= MAX_CERTIFICATE_BYTES);
        assert_eq!(
            Certificate::decode(&certificate.encode()).unwrap(),
            certificate
        );
    }

    #[test]
    fn a_token_from_a_key_outside_the_trust_document_is_refused() {
        let mesh = mesh();
        let stranger = SecretKey::from_seed(Role::Coordinator, [8; 32]);
        let token = Token::issue(&stranger, claims(&mesh, ""));
        assert_eq!(
            token.verify(&mesh.trust, NOW),
            Err(AdmissionError::UnknownTokenIssuer(
                stranger.public().fingerprint()
            ))
        );
        let refused = admit(
            &mesh.coordinator,
            &mesh.trust,
            &Revocations::default(),
            &request(&token, ""),
            NODE,
            NOW,
            DEFAULT_CERTIFICATE_TTL_SECS,
        );
        assert!(matches!(
            refused,
            Err(AdmissionError::UnknownTokenIssuer(_))
        ));
    }

    #[test]
    fn a_token_with_edited_claims_is_refused() {
        let mesh = mesh();
        let mut token = Token::issue(&mesh.coordinator, claims(&mesh, ""));
        token.claims.expires_unix_secs += 1;
        let text = token.encode();
        assert!(matches!(
            Token::decode(&text).unwrap().verify(&mesh.trust, NOW),
            Err(AdmissionError::BadTokenSignature(_))
        ));
    }

    #[test]
    fn a_token_for_another_root_is_refused() {
        let mesh = mesh();
        let mut claims = claims(&mesh, "");
        claims.root = SecretKey::from_seed(Role::Root, [5; 32]).public();
        let token = Token::issue(&mesh.coordinator, claims);
        assert!(matches!(
            token.verify(&mesh.trust, NOW),
            Err(AdmissionError::TokenForAnotherRoot { .. })
        ));
    }

    #[test]
    fn an_expired_token_is_refused_and_says_when_it_expired() {
        let mesh = mesh();
        let token = Token::issue(&mesh.coordinator, claims(&mesh, ""));
        let expiry = NOW + DEFAULT_TOKEN_TTL_SECS;
        assert!(token.verify(&mesh.trust, expiry).is_ok());
        let error = token.verify(&mesh.trust, expiry + 60).unwrap_err();
        assert_eq!(
            error,
            AdmissionError::TokenExpired {
                expires_unix_secs: expiry,
                now_unix_secs: expiry + 60
            }
        );
        let message = error.to_string();
        assert!(message.contains("2025-06-15T16:06:40Z"), "{message}");
        assert!(message.contains("60 s ago"), "{message}");
        assert!(message.contains("shoal token create"), "{message}");
    }

    #[test]
    fn utc_text_matches_known_dates() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_text(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(utc_text(4_102_444_800), "2100-01-01T00:00:00Z");
        // The far future still prints, so an error about it cannot panic.
        assert_eq!(utc_text(u64::MAX), "584554051223-11-09T07:00:15Z");
    }

    #[test]
    fn label_constraints_are_enforced_naming_the_label() {
        let mesh = mesh();
        let token = Token::issue(&mesh.coordinator, claims(&mesh, "region=eu1"));
        let admit_with = |node_labels: &str| {
            admit(
                &mesh.coordinator,
                &mesh.trust,
                &Revocations::default(),
                &request(&token, node_labels),
                NODE,
                NOW,
                DEFAULT_CERTIFICATE_TTL_SECS,
            )
        };
        let mismatch = admit_with("region=us2,rack=7").unwrap_err();
        assert_eq!(
            mismatch,
            AdmissionError::LabelMismatch {
                key: "region".into(),
                required: "eu1".into(),
                found: "us2".into()
            }
        );
        let message = mismatch.to_string();
        assert!(message.contains("region=eu1") && message.contains("region=us2"));
        assert_eq!(
            admit_with("rack=7").unwrap_err(),
            AdmissionError::LabelMissing {
                key: "region".into(),
                required: "eu1".into()
            }
        );
        let certificate = admit_with("region=eu1,rack=7").unwrap();
        assert_eq!(certificate.labels(), &labels("region=eu1,rack=7"));
    }

    #[test]
    fn an_admitted_node_gets_a_certificate_for_the_connection_peer_id() {
        let mesh = mesh();
        let token = Token::issue(&mesh.coordinator, claims(&mesh, ""));
        let response = respond(
            &mesh.coordinator,
            &mesh.trust,
            &Revocations::default(),
            &request(&token, "rack=7"),
            NODE,
            NOW,
            DEFAULT_CERTIFICATE_TTL_SECS,
        );
        let (certificate, trust) = accept_admission(response, &token, NODE, NOW + 1).unwrap();
        assert_eq!(trust, mesh.trust);
        assert_eq!(certificate.peer_id(), NODE);
        assert_eq!(certificate.issued_unix_secs(), NOW);
        assert_eq!(
            certificate.expires_unix_secs(),
            NOW + DEFAULT_CERTIFICATE_TTL_SECS
        );
        // The certificate outlives the token.
        let after_token = NOW + DEFAULT_TOKEN_TTL_SECS + 1;
        assert!(certificate.verify(&trust, NODE, after_token).is_ok());
    }

    #[test]
    fn a_refusal_reaches_the_node_with_its_reason() {
        let mesh = mesh();
        let token = Token::issue(&mesh.coordinator, claims(&mesh, ""));
        let response = respond(
            &mesh.coordinator,
            &mesh.trust,
            &Revocations::default(),
            &request(&token, ""),
            NODE,
            NOW + DEFAULT_TOKEN_TTL_SECS + 1,
            DEFAULT_CERTIFICATE_TTL_SECS,
        );
        let Err(AdmissionError::Refused(reason)) = accept_admission(response, &token, NODE, NOW)
        else {
            panic!("an expired token must be refused");
        };
        assert!(reason.starts_with("token expired at"), "{reason}");
        let hostile = AdmissionResponse::Refused {
            reason: format!("\u{1b}[2J{}", "x".repeat(5000)),
        };
        let Err(AdmissionError::Refused(reason)) = accept_admission(hostile, &token, NODE, NOW)
        else {
            panic!("a refusal must be reported");
        };
        assert!(reason.starts_with('\u{fffd}'));
        assert_eq!(reason.chars().count(), MAX_REFUSAL_CHARS);
    }

    #[test]
    fn a_certificate_for_another_peer_is_refused() {
        let mesh = mesh();
        let error = certificate(&mesh)
            .verify(&mesh.trust, b"someone-else", NOW)
            .unwrap_err();
        assert_eq!(
            error,
            AdmissionError::CertificateForAnotherPeer {
                certificate_peer_id: hex::encode(NODE),
                peer_id: hex::encode(b"someone-else"),
            }
        );
        assert!(error.to_string().contains("belongs to another peer"));
    }

    #[test]
    fn a_certificate_with_a_label_changed_after_signing_is_refused() {
        let mesh = mesh();
        let mut certificate = certificate(&mesh);
        assert!(certificate.verify(&mesh.trust, NODE, NOW).is_ok());
        certificate.labels = labels("region=us2,rack=7");
        let tampered = Certificate::decode(&certificate.encode()).unwrap();
        assert!(matches!(
            tampered.verify(&mesh.trust, NODE, NOW),
            Err(AdmissionError::BadCertificateSignature(_))
        ));
    }

    #[test]
    fn a_certificate_from_a_key_outside_the_trust_document_is_refused() {
        let mesh = mesh();
        let stranger = SecretKey::from_seed(Role::Coordinator, [8; 32]);
        let certificate = Certificate::issue(
            &stranger,
            NODE.to_vec(),
            Labels::default(),
            NOW,
            NOW + 10,
            None,
        );
        assert!(matches!(
            certificate.verify(&mesh.trust, NODE, NOW),
            Err(AdmissionError::UnknownCertificateIssuer(_))
        ));
        let refused = admit(
            &stranger,
            &mesh.trust,
            &Revocations::default(),
            &request(&Token::issue(&mesh.coordinator, claims(&mesh, "")), ""),
            NODE,
            NOW,
            DEFAULT_CERTIFICATE_TTL_SECS,
        );
        assert!(matches!(refused, Err(AdmissionError::NotACoordinator(_))));
    }

    #[test]
    fn a_certificate_is_valid_from_issue_less_skew_until_expiry() {
        let mesh = mesh();
        let certificate = certificate(&mesh);
        let expiry = NOW + DEFAULT_CERTIFICATE_TTL_SECS;
        assert!(certificate.verify(&mesh.trust, NODE, expiry).is_ok());
        assert_eq!(
            certificate.verify(&mesh.trust, NODE, expiry + 1),
            Err(AdmissionError::CertificateExpired {
                expires_unix_secs: expiry,
                now_unix_secs: expiry + 1
            })
        );
        let earliest = NOW - MAX_CLOCK_SKEW_SECS;
        assert!(certificate.verify(&mesh.trust, NODE, earliest).is_ok());
        assert_eq!(
            certificate.verify(&mesh.trust, NODE, earliest - 1),
            Err(AdmissionError::CertificateNotYetValid {
                issued_unix_secs: NOW,
                now_unix_secs: earliest - 1
            })
        );
    }

    #[test]
    fn oversize_input_is_refused_before_decoding() {
        let long = format!("shoal-token-1.{}", "A".repeat(MAX_TOKEN_CHARS));
        assert_eq!(
            Token::decode(&long),
            Err(AdmissionError::TokenTooLong(long.len()))
        );
        let big = vec![0u8; MAX_CERTIFICATE_BYTES + 1];
        assert_eq!(
            Certificate::decode(&big),
            Err(AdmissionError::CertificateTooLarge(big.len()))
        );
        let mesh = mesh();
        let refused = admit(
            &mesh.coordinator,
            &mesh.trust,
            &Revocations::default(),
            &AdmissionRequest {
                token: long,
                labels: Labels::default(),
            },
            NODE,
            NOW,
            DEFAULT_CERTIFICATE_TTL_SECS,
        );
        assert!(matches!(refused, Err(AdmissionError::TokenTooLong(_))));
        let long_peer = vec![1; MAX_PEER_ID_BYTES + 1];
        let token = Token::issue(&mesh.coordinator, claims(&mesh, ""));
        assert_eq!(
            admit(
                &mesh.coordinator,
                &mesh.trust,
                &Revocations::default(),
                &request(&token, ""),
                &long_peer,
                NOW,
                DEFAULT_CERTIFICATE_TTL_SECS
            ),
            Err(AdmissionError::PeerIdTooLong(long_peer.len()))
        );
    }

    #[test]
    fn text_that_is_not_a_token_is_named_as_such() {
        let error = Token::decode("shoal-secret-key-v1 coordinator 0011").unwrap_err();
        assert_eq!(
            error,
            AdmissionError::NotAToken("shoal-secret-key-v1 coor…".into())
        );
        assert!(error.to_string().contains("shoal token create"));
        assert!(matches!(
            Token::decode("shoal-token-2.AAAA"),
            Err(AdmissionError::UnsupportedTokenFormat(_))
        ));
        assert_eq!(
            Token::decode("shoal-token-1.AA!A"),
            Err(AdmissionError::TokenEncoding(
                "character '!' at position 17 is not base64url".into()
            ))
        );
        assert!(matches!(
            Token::decode("shoal-token-1.AAAAA"),
            Err(AdmissionError::TokenEncoding(_))
        ));
        assert!(matches!(
            Token::decode("shoal-token-1.AAAA"),
            Err(AdmissionError::CorruptToken(_))
        ));
    }

    #[test]
    fn a_trust_document_with_another_root_is_refused_by_the_node() {
        let mesh = mesh();
        let other_root = SecretKey::from_seed(Role::Root, [6; 32]);
        let other_trust = Trust::sign(
            &other_root,
            vec![SecretKey::from_seed(Role::Publisher, [2; 32]).public()],
            vec![mesh.coordinator.public()],
            42,
        )
        .unwrap();
        let token = Token::issue(&mesh.coordinator, claims(&mesh, ""));
        // A coordinator (or an impostor at its address) answering with another mesh's document,
        // and a certificate that would verify against that document.
        let response = AdmissionResponse::Admitted {
            certificate: certificate(&mesh),
            trust: other_trust.encode(),
        };
        assert!(matches!(
            accept_admission(response, &token, NODE, NOW),
            Err(AdmissionError::Trust(TrustError::UntrustedRoot { .. }))
        ));
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff], "-_8"),
        ] {
            let mut encoded = String::new();
            base64url_encode(bytes, &mut encoded);
            assert_eq!(encoded, text);
            assert_eq!(base64url_decode(text).unwrap(), bytes);
        }
        assert_eq!(base64url_decode("Zh"), Err(Base64Error::StrayBits));
        assert_eq!(base64url_decode("Zm9vY"), Err(Base64Error::BadLength));
    }

    proptest! {
        #[test]
        fn base64url_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut text = String::new();
            base64url_encode(&bytes, &mut text);
            prop_assert_eq!(base64url_decode(&text).unwrap(), bytes);
        }

        #[test]
        fn token_decode_never_panics(text in ".{0,600}") {
            let _ = Token::decode(&text);
            let _ = Token::decode(&format!("shoal-token-1.{text}"));
        }

        #[test]
        fn token_decode_never_panics_on_arbitrary_payloads(
            bytes in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            let mut text = String::from(TOKEN_PREFIX);
            base64url_encode(&bytes, &mut text);
            let _ = Token::decode(&text);
        }

        #[test]
        fn certificate_decode_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..MAX_CERTIFICATE_BYTES + 16)
        ) {
            let _ = Certificate::decode(&bytes);
        }

        #[test]
        fn an_altered_certificate_never_verifies(offset: usize, flip in 1u8..=255) {
            let mesh = mesh();
            let original = certificate(&mesh);
            let mut bytes = original.encode();
            let offset = offset % bytes.len();
            bytes[offset] ^= flip;
            if let Ok(altered) = Certificate::decode(&bytes)
                && altered != original
            {
                prop_assert!(altered.verify(&mesh.trust, NODE, NOW).is_err());
            }
        }
    }
}
