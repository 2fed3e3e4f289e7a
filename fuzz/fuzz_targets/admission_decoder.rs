//! Fuzzes the decoders of what an unadmitted stranger can send: onboarding tokens (text),
//! admission certificates (bytes) and operator requests' `Authorization` headers (text).
//!
//! Checks, for any input: decoding never panics; a token, certificate or header that decodes
//! re-encodes to one that decodes to the same value; verification against a trust document, and
//! the coordinator's operator gate, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::admission::{Certificate, Token};
use shoal_core::keys::{Role, SecretKey};
use shoal_core::operator::{Gate, OperatorGrant, RequestAuth, Scope};
use shoal_core::trust::Trust;
use std::sync::OnceLock;

fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let root = SecretKey::from_seed(Role::Root, [1; 32]);
        let publisher = SecretKey::from_seed(Role::Publisher, [2; 32]).public();
        let coordinator = SecretKey::from_seed(Role::Coordinator, [3; 32]).public();
        Trust::sign(&root, vec![publisher], vec![coordinator], 0)
            .expect("a trust document with one key per role")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(certificate) = Certificate::decode(data) {
        let again =
            Certificate::decode(&certificate.encode()).expect("a re-encoded certificate decodes");
        assert_eq!(again, certificate);
        let _ = certificate.verify(trust(), &[0; 38], 1_000_000);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(auth) = RequestAuth::parse(text) {
            let again = RequestAuth::parse(&auth.header()).expect("a re-encoded header parses");
            assert_eq!(again, auth);
        }
        let mut gate = Gate::new(&[OperatorGrant {
            key: SecretKey::from_seed(Role::Operator, [4; 32]).public(),
            scopes: vec![Scope::Read],
        }]);
        let _ = gate.check(1_000_000, Scope::Read, "GET", "/v1/fleet", data, Some(text));
        gate.check_invariants();
        for candidate in [text.to_owned(), format!("shoal-token-1.{text}")] {
            if let Ok(token) = Token::decode(&candidate) {
                let again = Token::decode(&token.encode()).expect("a re-encoded token decodes");
                assert_eq!(again, token);
                let _ = token.verify(trust(), 1_000_000);
            }
        }
    }
});
