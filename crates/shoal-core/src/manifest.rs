//! Release manifests: what a publisher signs and every machine checks before trusting a byte.
//!
//! A manifest names a release (`service@version` and a release counter that only grows per service),
//! describes its payload (size, piece size, the chaining value of every piece, the root hash) and
//! carries the publisher's ed25519 signature.
//!
//! Checking runs in three steps, each with its own error so callers can tell them apart:
//! 1. [`SignedManifest::decode`]: size limit, magic, format version, structure (no signature yet);
//! 2. [`SignedManifest::verify`], the signature chain: the publisher is named by the trust document
//!    and its signature verifies;
//! 3. then the piece list: the chaining values combine to the signed root.
//!
//! Only a [`VerifiedManifest`] hands out a [`PieceVerifier`], so pieces are only ever checked
//! against a piece list that passed all three.
//!
//! The file format is `SHOALMF` `\0`, a format byte, then the postcard encoding of [`SignedManifest`].

use crate::content::{
    ChainingValue, LayoutError, PieceLayout, PieceVerifier, RootHash, combine_root,
};
use crate::keys::{PublicKey, Role, SecretKey, Signature};
use crate::trust::Trust;
use serde::{Deserialize, Serialize};

/// The first bytes of every manifest file.
pub const MAGIC: &[u8; 8] = b"SHOALMF\0";

/// The manifest format this build reads and writes.
pub const FORMAT_VERSION: u8 = 1;

/// The largest manifest accepted, in bytes: the longest piece list (2^20 entries of 33 bytes) and
/// room for the rest.
pub const MAX_MANIFEST_BYTES: usize = 34 * 1024 * 1024 + 64 * 1024;

/// The longest service name or version string, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// The signature domain of manifests: signatures cover this, a zero byte, then
/// [`Manifest::signed_bytes`].
pub const SIGNATURE_DOMAIN: &[u8] = b"shoal/manifest/v1";

/// What a publisher signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The service this release belongs to, e.g. `payments-api`.
    pub service: String,
    /// The release's version label, e.g. `2.14.0`.
    pub version: String,
    /// A counter that only grows per service; machines refuse to move to a lower one unless a
    /// signed rollback names it.
    pub release_counter: u64,
    /// The payload's size.
    pub size_bytes: u64,
    /// The size of every piece but the last, a power of two.
    pub piece_size_bytes: u32,
    /// When the manifest was created, in seconds since the Unix epoch.
    pub created_at_unix_secs: u64,
    /// The BLAKE3 hash of the whole payload, as `b3sum` prints it.
    pub root: RootHash,
    /// The chaining value of every piece, in order.
    pub pieces: Vec<ChainingValue>,
    /// The key that signed this manifest.
    pub publisher: PublicKey,
}

impl Manifest {
    /// The piece layout the manifest describes.
    ///
    /// # Errors
    ///
    /// A piece size that is not a power of two or out of range, or too many pieces.
    pub fn layout(&self) -> Result<PieceLayout, LayoutError> {
        PieceLayout::new(self.size_bytes, u64::from(self.piece_size_bytes))
    }

    /// `service@version`.
    pub fn name(&self) -> String {
        format!("{}@{}", self.service, self.version)
    }

    /// The bytes a publisher signs: the postcard encoding of the manifest.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(self)
    }
}

/// A manifest with its publisher's signature, as stored in a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The signed content.
    pub manifest: Manifest,
    /// The publisher's signature over the postcard encoding of `manifest`.
    pub signature: Signature,
}

/// Why a manifest was refused. The variants fall in three groups, reported by [`kind`](Self::kind).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The file is larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {0} bytes, more than the limit of {MAX_MANIFEST_BYTES}")]
    TooLarge(usize),
    /// The file does not start with the manifest magic.
    #[error("not a shoal manifest (it does not start with the manifest magic bytes)")]
    NotAManifest,
    /// The file has a format this build does not know.
    #[error("manifest format {0} is not supported (this build reads format {FORMAT_VERSION})")]
    UnsupportedFormat(u8),
    /// The content cannot be decoded: truncated or garbage.
    #[error("manifest is truncated or corrupt: {0}")]
    Corrupt(String),
    /// The layout is invalid.
    #[error("manifest describes an invalid layout: {0}")]
    Layout(#[from] LayoutError),
    /// The piece list has the wrong length for the layout.
    #[error("manifest lists {listed} pieces, but its size and piece size make {expected}")]
    PieceCount {
        /// Pieces listed.
        listed: usize,
        /// Pieces the layout has.
        expected: u32,
    },
    /// The service name or version is empty, too long, or has characters outside the allowed set.
    #[error(
        "{field} {value:?} is not valid: use 1 to {MAX_NAME_BYTES} characters from A-Z a-z 0-9 . _ - + and start with a letter or digit"
    )]
    BadName {
        /// "service" or "version".
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// The publisher key is not named by the trust document.
    #[error("manifest is signed by {0}, which the trust document does not name as a publisher")]
    UnknownPublisher(String),
    /// The signature does not verify.
    #[error(
        "manifest signature by {0} does not verify: the manifest was altered or signed with another key"
    )]
    BadSignature(String),
    /// The piece list does not combine to the signed root.
    #[error("manifest piece list does not combine to its root {0}")]
    PieceListMismatch(RootHash),
}

/// The three kinds of manifest failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestErrorKind {
    /// The bytes are not a well-formed manifest.
    Malformed,
    /// The signature chain (trust document, publisher, signature) does not hold.
    Signature,
    /// The piece list does not match the root.
    Pieces,
}

impl ManifestError {
    /// Which of the three checks failed.
    pub fn kind(&self) -> ManifestErrorKind {
        match self {
            ManifestError::TooLarge(_)
            | ManifestError::NotAManifest
            | ManifestError::UnsupportedFormat(_)
            | ManifestError::Corrupt(_)
            | ManifestError::Layout(_)
            | ManifestError::PieceCount { .. }
            | ManifestError::BadName { .. } => ManifestErrorKind::Malformed,
            ManifestError::UnknownPublisher(_) | ManifestError::BadSignature(_) => {
                ManifestErrorKind::Signature
            }
            ManifestError::PieceListMismatch(_) => ManifestErrorKind::Pieces,
        }
    }
}

impl SignedManifest {
    /// Signs `manifest` with a publisher key, setting its `publisher` field to that key.
    ///
    /// # Errors
    ///
    /// A manifest that would not decode (bad names, bad layout, wrong piece count).
    ///
    /// # Panics
    ///
    /// If `key` is not a publisher key, or the piece list does not combine to the root: the
    /// publisher checks the root before signing, so a bad hash here is a bug in the caller.
    pub fn sign(mut manifest: Manifest, key: &SecretKey) -> Result<Self, ManifestError> {
        assert_eq!(
            key.role(),
            Role::Publisher,
            "manifests are signed by a publisher key"
        );
        manifest.publisher = key.public();
        check_structure(&manifest)?;
        assert_eq!(
            combine_root(&manifest.pieces),
            Some(manifest.root),
            "piece list does not combine to the root"
        );
        let signature = key.sign(SIGNATURE_DOMAIN, &signed_bytes(&manifest));
        Ok(Self {
            manifest,
            signature,
        })
    }

    /// The manifest file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.manifest.pieces.len() * 33);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        postcard::to_io(self, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Parses a manifest file's bytes and checks its structure. The signature is not checked
    /// yet: call [`verify`](Self::verify).
    ///
    /// # Errors
    ///
    /// Oversize, wrong magic, unknown format, truncated or trailing bytes, an invalid layout,
    /// a wrong piece count, or bad names.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err(ManifestError::NotAManifest);
        };
        let Some((&format, body)) = rest.split_first() else {
            return Err(ManifestError::Corrupt(
                "it ends after the magic bytes".into(),
            ));
        };
        if format != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedFormat(format));
        }
        let (signed, trailing): (SignedManifest, _) =
            postcard::take_from_bytes(body).map_err(|e| ManifestError::Corrupt(e.to_string()))?;
        if !trailing.is_empty() {
            return Err(ManifestError::Corrupt(format!(
                "{} unexpected bytes after the end",
                trailing.len()
            )));
        }
        check_structure(&signed.manifest)?;
        Ok(signed)
    }

    /// Checks the signature chain against `trust`, then the piece list against the root.
    ///
    /// # Errors
    ///
    /// [`ManifestError::UnknownPublisher`], [`ManifestError::BadSignature`] or
    /// [`ManifestError::PieceListMismatch`].
    pub fn verify(self, trust: &Trust) -> Result<VerifiedManifest, ManifestError> {
        let m = &self.manifest;
        if !trust.is_publisher(&m.publisher) {
            return Err(ManifestError::UnknownPublisher(m.publisher.fingerprint()));
        }
        if !m
            .publisher
            .verify(SIGNATURE_DOMAIN, &signed_bytes(m), &self.signature)
        {
            return Err(ManifestError::BadSignature(m.publisher.fingerprint()));
        }
        if combine_root(&m.pieces) != Some(m.root) {
            return Err(ManifestError::PieceListMismatch(m.root));
        }
        let layout = m.layout()?;
        let verifier = PieceVerifier::new(layout, m.pieces.clone(), m.root);
        Ok(VerifiedManifest {
            signed: self,
            verifier,
        })
    }
}

/// A manifest whose signature chain and piece list have been checked against a trust document.
#[derive(Clone, Debug)]
pub struct VerifiedManifest {
    signed: SignedManifest,
    verifier: PieceVerifier,
}

impl VerifiedManifest {
    /// The manifest content.
    pub fn manifest(&self) -> &Manifest {
        &self.signed.manifest
    }

    /// The manifest with its signature, e.g. to store or forward it.
    pub fn signed(&self) -> &SignedManifest {
        &self.signed
    }

    /// The release id.
    pub fn root(&self) -> RootHash {
        self.signed.manifest.root
    }

    /// The payload's piece layout.
    pub fn layout(&self) -> &PieceLayout {
        self.verifier.layout()
    }

    /// Checks pieces against the verified piece list.
    pub fn verifier(&self) -> &PieceVerifier {
        &self.verifier
    }
}

fn check_structure(m: &Manifest) -> Result<(), ManifestError> {
    check_name("service", &m.service)?;
    check_name("version", &m.version)?;
    let layout = m.layout()?;
    if m.pieces.len() != layout.piece_count() as usize {
        return Err(ManifestError::PieceCount {
            listed: m.pieces.len(),
            expected: layout.piece_count(),
        });
    }
    Ok(())
}

/// Checks a service name or version: 1 to 64 bytes of `A-Za-z0-9._-+`, starting with a letter or
/// digit, so it is safe in paths, logs and URLs.
///
/// # Errors
///
/// [`ManifestError::BadName`] naming the field and value.
pub fn check_name(field: &'static str, value: &str) -> Result<(), ManifestError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_BYTES
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadName {
            field,
            value: value.chars().take(MAX_NAME_BYTES * 2).collect(),
        })
    }
}

fn signed_bytes(manifest: &Manifest) -> Vec<u8> {
    postcard::to_stdvec(manifest).expect("a manifest always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{PieceHasher, PieceIndex};

    struct Fixture {
        publisher: SecretKey,
        trust: Trust,
        data: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let root = SecretKey::from_seed(Role::Root, [1; 32]);
        let publisher = SecretKey::from_seed(Role::Publisher, [2; 32]);
        let coordinator = SecretKey::from_seed(Role::Coordinator, [3; 32]);
        let trust = Trust::sign(
            &root,
            vec![publisher.public()],
            vec![coordinator.public()],
            0,
        )
        .unwrap();
        let data = (0..100_000u32).map(|i| (i * 7 + i / 1000) as u8).collect();
        Fixture {
            publisher,
            trust,
            data,
        }
    }

    fn manifest_for(data: &[u8]) -> Manifest {
        let layout = PieceLayout::new(data.len() as u64, 16384).unwrap();
        let pieces = layout
            .indices()
            .map(|i| {
                let start = layout.offset(i) as usize;
                PieceHasher::new(&layout, i)
                    .update(&data[start..start + layout.piece_len(i) as usize])
                    .finish()
            })
            .collect();
        Manifest {
            service: "payments-api".into(),
            version: "2.14.0".into(),
            release_counter: 7,
            size_bytes: data.len() as u64,
            piece_size_bytes: 16384,
            created_at_unix_secs: 1_700_000_000,
            root: blake3::hash(data).into(),
            pieces,
            publisher: PublicKey([0; 32]),
        }
    }

    #[test]
    fn signed_manifest_round_trips_and_verifies() {
        let f = fixture();
        let signed = SignedManifest::sign(manifest_for(&f.data), &f.publisher).unwrap();
        let decoded = SignedManifest::decode(&signed.encode()).unwrap();
        assert_eq!(decoded, signed);
        let verified = decoded.verify(&f.trust).unwrap();
        assert_eq!(verified.root(), RootHash::from(blake3::hash(&f.data)));
        assert_eq!(
            verified.verifier().verify(PieceIndex(0), &f.data[..16384]),
            Ok(())
        );
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        let f = fixture();
        let bytes = SignedManifest::sign(manifest_for(&f.data), &f.publisher)
            .unwrap()
            .encode();
        for len in 0..bytes.len() {
            let err = SignedManifest::decode(&bytes[..len]).unwrap_err();
            assert_eq!(
                err.kind(),
                ManifestErrorKind::Malformed,
                "length {len}: {err}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            SignedManifest::decode(&longer),
            Err(ManifestError::Corrupt(_))
        ));
    }

    #[test]
    fn a_stranger_publisher_is_refused() {
        let f = fixture();
        let stranger = SecretKey::from_seed(Role::Publisher, [8; 32]);
        let signed = SignedManifest::sign(manifest_for(&f.data), &stranger).unwrap();
        let err = signed.verify(&f.trust).unwrap_err();
        assert!(matches!(err, ManifestError::UnknownPublisher(_)));
        assert_eq!(err.kind(), ManifestErrorKind::Signature);
    }

    #[test]
    fn any_edit_after_signing_is_caught() {
        let f = fixture();
        let signed = SignedManifest::sign(manifest_for(&f.data), &f.publisher).unwrap();

        let mut counter = signed.clone();
        counter.manifest.release_counter += 1;
        assert!(matches!(
            counter.verify(&f.trust),
            Err(ManifestError::BadSignature(_))
        ));

        let mut piece = signed.clone();
        piece.manifest.pieces[2].0[0] ^= 1;
        assert!(matches!(
            piece.verify(&f.trust),
            Err(ManifestError::BadSignature(_))
        ));
    }

    #[test]
    fn a_signed_but_inconsistent_piece_list_is_a_piece_error() {
        let f = fixture();
        let mut m = manifest_for(&f.data);
        m.publisher = f.publisher.public();
        m.pieces[1].0[5] ^= 1;
        // Sign by hand: `SignedManifest::sign` would refuse this, as a publisher must.
        let signature = f.publisher.sign(SIGNATURE_DOMAIN, &signed_bytes(&m));
        let signed = SignedManifest {
            manifest: m,
            signature,
        };
        let err = SignedManifest::decode(&signed.encode())
            .unwrap()
            .verify(&f.trust)
            .unwrap_err();
        assert_eq!(err.kind(), ManifestErrorKind::Pieces);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("service", "payments-api").is_ok());
        assert!(check_name("version", "1.2.3+build.4").is_ok());
        for bad in ["", "-lead", "a b", "../etc", "x/y", &"a".repeat(65)] {
            assert!(check_name("service", bad).is_err(), "{bad:?}");
        }
    }
}
