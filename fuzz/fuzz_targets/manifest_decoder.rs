//! Fuzzes the manifest decoder and verifier.
//!
//! Checks, for any bytes in a manifest file:
//! - decoding and verification never panic, whatever the piece list, sizes or names;
//! - a manifest that decodes re-encodes to bytes that decode to the same manifest.
//!
//! Verification runs twice: against a trust document that does not name the manifest's publisher
//! (refused at once), and against one that does, so mutated signatures and piece lists reach the
//! signature and piece-list checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::keys::{PublicKey, Role, SecretKey};
use shoal_core::manifest::SignedManifest;
use shoal_core::trust::Trust;
use std::sync::OnceLock;

fn root() -> &'static SecretKey {
    static ROOT: OnceLock<SecretKey> = OnceLock::new();
    ROOT.get_or_init(|| SecretKey::from_seed(Role::Root, [1; 32]))
}

fn trust_naming(publisher: PublicKey) -> Trust {
    let coordinator = SecretKey::from_seed(Role::Coordinator, [3; 32]);
    Trust::sign(root(), vec![publisher], vec![coordinator.public()], 0)
        .expect("a trust document with one key per role")
}

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = SignedManifest::decode(data) else {
        return;
    };
    let again = SignedManifest::decode(&manifest.encode()).expect("a re-encoded manifest decodes");
    assert_eq!(again, manifest);
    let stranger = SecretKey::from_seed(Role::Publisher, [2; 32]).public();
    if manifest.manifest.publisher != stranger {
        assert!(manifest.clone().verify(&trust_naming(stranger)).is_err());
    }
    let publisher = manifest.manifest.publisher;
    let _ = manifest.verify(&trust_naming(publisher));
});
