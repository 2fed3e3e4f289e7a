//! Operators: the people and tools allowed to change the fleet, and how their requests are
//! checked.
//!
//! The trust document names operator keys, each with its [`Scope`]s: `admin` (onboarding tokens
//! and their revocation), `release` (publish, start and steer rollouts) and `read` (status, the
//! audit log, fleet queries). Each request to the coordinator carries an `Authorization` header
//! ([`RequestAuth`]): the operator's public key, the time, a random nonce and an ed25519
//! signature over the method, the path with its query, the BLAKE3 digest of the body, the time
//! and the nonce. The coordinator's [`Gate`] refuses what is unsigned, signed by a key the trust
//! document does not name, outside the allowed clock skew, replayed, or out of scope, and says
//! which; where a request comes from counts for nothing.
//!
//! The components signed are those of RFC 9421 (HTTP Message Signatures: `@method`,
//! `@path`/`@query`, a content digest, `created`, `nonce`, `keyid`), in a compact encoding of
//! our own with the key roles and signature domains the rest of Shoal uses.
//!
//! Nothing here reads a clock or does IO: [`Gate::check`] takes the time as an argument.

mod gate;
mod policy;

pub use gate::{Gate, GateCounts, Refusal, RefusalKind};
pub use policy::required_scope;

use crate::keys::{PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The signature domain of operator requests.
const DOMAIN: &[u8] = b"shoal/operator-request/v1";

/// The `Authorization` scheme of signed operator requests.
pub const AUTH_SCHEME: &str = "Shoal-Ed25519";

/// How far a request's time may be from the coordinator's clock, either way: machines whose
/// clocks are kept by NTP are within a second of each other.
pub const MAX_CLOCK_SKEW_SECS: u64 = 120;

/// The longest `Authorization` header accepted, in bytes (a real one is about 330).
pub const MAX_HEADER_BYTES: usize = 512;

/// What an operator key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Create and revoke onboarding tokens.
    Admin,
    /// Publish releases; start, pause, resume, promote, abort and roll back rollouts.
    Release,
    /// Read status, the audit log and fleet queries.
    Read,
}

impl Scope {
    /// Every scope, in the order they are written.
    pub const ALL: [Scope; 3] = [Scope::Admin, Scope::Release, Scope::Read];

    /// The scope's name as written in the trust document and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Release => "release",
            Scope::Read => "read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}: expected admin, release or read"))
    }
}

/// An operator key and what it may do, as the trust document names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorGrant {
    /// The operator's public key.
    pub key: PublicKey,
    /// Its scopes, sorted, without repeats.
    pub scopes: Vec<Scope>,
}

/// The operator a request was checked to come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// Its key.
    pub key: PublicKey,
    /// The scope the request needed.
    pub scope: Scope,
}

impl Operator {
    /// The name the audit log gives it: the key's fingerprint.
    pub fn name(&self) -> String {
        self.key.fingerprint()
    }
}

/// What is signed: RFC 9421's components in postcard.
#[derive(Serialize)]
struct SignedParts<'a> {
    method: &'a str,
    path_and_query: &'a str,
    body_blake3: [u8; 32],
    time_unix_secs: u64,
    nonce: [u8; 16],
}

/// The `Authorization` header of a signed operator request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAuth {
    /// The operator's public key.
    pub key: PublicKey,
    /// When the request was signed (Unix seconds).
    pub time_unix_secs: u64,
    /// A random value that makes the request unique.
    pub nonce: [u8; 16],
    /// The signature.
    pub signature: Signature,
}

impl RequestAuth {
    /// Signs a request with an operator key.
    pub fn sign(
        key: &SecretKey,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        time_unix_secs: u64,
        nonce: [u8; 16],
    ) -> Self {
        let parts = signed_bytes(method, path_and_query, body, time_unix_secs, nonce);
        Self {
            key: key.public(),
            time_unix_secs,
            nonce,
            signature: key.sign(DOMAIN, &parts),
        }
    }

    /// The header value: `Shoal-Ed25519 key=HEX, time=SECS, nonce=HEX, sig=HEX`.
    pub fn header(&self) -> String {
        format!(
            "{AUTH_SCHEME} key={}, time={}, nonce={}, sig={}",
            self.key,
            self.time_unix_secs,
            hex::encode(self.nonce),
            hex::encode(self.signature.0)
        )
    }

    /// Parses a header value made by [`RequestAuth::header`].
    ///
    /// # Errors
    ///
    /// A message naming what is wrong, for a header that is too long, of another scheme, or
    /// missing or repeating a field.
    pub fn parse(header: &str) -> Result<Self, String> {
        if header.len() > MAX_HEADER_BYTES {
            return Err(format!(
                "the Authorization header is {} bytes, more than {MAX_HEADER_BYTES}",
                header.len()
            ));
        }
        let Some(fields) = header
            .strip_prefix(AUTH_SCHEME)
            .and_then(|r| r.strip_prefix(' '))
        else {
            return Err(format!(
                "the Authorization header is not of the {AUTH_SCHEME} scheme"
            ));
        };
        let (mut key, mut time, mut nonce, mut sig) = (None, None, None, None);
        for field in fields.split(',').map(str::trim) {
            let (name, value) = field
                .split_once('=')
                .ok_or_else(|| format!("the Authorization field {field:?} has no value"))?;
            let slot = match name {
                "key" => &mut key,
                "time" => &mut time,
                "nonce" => &mut nonce,
                "sig" => &mut sig,
                other => return Err(format!("unknown Authorization field {other:?}")),
            };
            if slot.replace(value).is_some() {
                return Err(format!("the Authorization field {name:?} is repeated"));
            }
        }
        fn need<'h>(v: Option<&'h str>, name: &str) -> Result<&'h str, String> {
            v.ok_or_else(|| format!("the Authorization header has no {name:?} field"))
        }
        let key = PublicKey(decode_hex(need(key, "key")?, "key")?);
        let time_unix_secs = need(time, "time")?
            .parse()
            .map_err(|_| "the Authorization time is not a number of seconds".to_owned())?;
        let nonce = decode_hex(need(nonce, "nonce")?, "nonce")?;
        let signature = Signature(decode_hex(need(sig, "sig")?, "sig")?);
        Ok(Self {
            key,
            time_unix_secs,
            nonce,
            signature,
        })
    }

    /// Whether the signature covers this request.
    pub fn verifies(&self, method: &str, path_and_query: &str, body: &[u8]) -> bool {
        let parts = signed_bytes(
            method,
            path_and_query,
            body,
            self.time_unix_secs,
            self.nonce,
        );
        self.key.verify(DOMAIN, &parts, &self.signature)
    }
}

fn signed_bytes(
    method: &str,
    path_and_query: &str,
    body: &[u8],
    time_unix_secs: u64,
    nonce: [u8; 16],
) -> Vec<u8> {
    postcard::to_stdvec(&SignedParts {
        method,
        path_and_query,
        body_blake3: *blake3::hash(body).as_bytes(),
        time_unix_secs,
        nonce,
    })
    .expect("signed parts always serialize")
}

fn decode_hex<const N: usize>(text: &str, name: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| format!("the Authorization {name} is not {} hex digits", 2 * N))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Role;

    #[test]
    fn a_header_round_trips_and_covers_every_part() {
        let key = SecretKey::from_seed(Role::Operator, [4; 32]);
        let auth = RequestAuth::sign(&key, "POST", "/v1/rollouts", b"{}", 1_000, [7; 16]);
        let parsed = RequestAuth::parse(&auth.header()).unwrap();
        assert_eq!(parsed, auth);
        assert!(parsed.verifies("POST", "/v1/rollouts", b"{}"));
        assert!(!parsed.verifies("GET", "/v1/rollouts", b"{}"));
        assert!(!parsed.verifies("POST", "/v1/rollouts?x=1", b"{}"));
        assert!(!parsed.verifies("POST", "/v1/rollouts", b"{ }"));
        let mut later = parsed.clone();
        later.time_unix_secs += 1;
        assert!(!later.verifies("POST", "/v1/rollouts", b"{}"));
        let mut other_nonce = parsed;
        other_nonce.nonce[0] ^= 1;
        assert!(!other_nonce.verifies("POST", "/v1/rollouts", b"{}"));
    }

    #[test]
    fn bad_headers_are_refused_with_what_is_wrong() {
        let key = SecretKey::from_seed(Role::Operator, [4; 32]);
        let good = RequestAuth::sign(&key, "GET", "/", b"", 1, [0; 16]).header();
        for (header, says) in [
            ("Bearer abc".to_owned(), "scheme"),
            (good.replace("time=1", "time=x"), "number"),
            (good.replace(", nonce=", ", nonce=0"), "hex digits"),
            (good.replace("sig=", "sog="), "unknown"),
            (format!("{good}, time=2"), "repeated"),
            (good.replace(", sig=", ", x, sig="), "no value"),
            (format!("{good}{}", " ".repeat(MAX_HEADER_BYTES)), "bytes"),
        ] {
            let err = RequestAuth::parse(&header).unwrap_err();
            assert!(err.contains(says), "{header:?}: {err}");
        }
    }

    #[test]
    fn scopes_parse_by_name() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!("root".parse::<Scope>().unwrap_err().contains("root"));
    }
}
