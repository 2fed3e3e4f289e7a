//! Certificate renewal: an admitted node gets a fresh certificate before its own expires,
//! without a token.
//!
//! In the last third of its certificate's lifetime
//! ([`Certificate::is_renewal_due`]) a node sends the certificate to the coordinator, over a
//! connection that proves its peer id. The coordinator checks it as any peer would, refuses it
//! if its token has been revoked, and issues a new one with the same labels and token, valid
//! from now. A node whose certificate expires anyway (it was away) joins again with a token.

use crate::admission::{AdmissionError, AdmissionResponse, Certificate};
use crate::keys::SecretKey;
use crate::revocation::Revocations;
use crate::trust::Trust;

/// Renews `certificate` for the peer behind a connection.
///
/// `peer_id` must be the id the connection's handshake proved.
///
/// # Errors
///
/// [`AdmissionError::NotACoordinator`] if `key` is not a coordinator in `trust`; any error of
/// [`Certificate::verify`] (an expired certificate cannot be renewed); and
/// [`AdmissionError::TokenRevoked`] if its token is listed in `revocations`.
///
/// # Panics
///
/// If `key` is not a coordinator-role key.
pub fn renew(
    key: &SecretKey,
    trust: &Trust,
    revocations: &Revocations,
    certificate: &Certificate,
    peer_id: &[u8],
    now_unix_secs: u64,
    certificate_ttl_secs: u64,
) -> Result<Certificate, AdmissionError> {
    if !trust.is_coordinator(&key.public()) {
        return Err(AdmissionError::NotACoordinator(key.public().fingerprint()));
    }
    certificate.verify(trust, peer_id, now_unix_secs)?;
    certificate.check_revocations(revocations)?;
    Ok(Certificate::issue(
        key,
        peer_id.to_vec(),
        certificate.labels().clone(),
        now_unix_secs,
        now_unix_secs.saturating_add(certificate_ttl_secs),
        certificate.token_id(),
    ))
}

/// [`renew`] for the certificate's `bytes`, with the outcome as the response to send.
///
/// # Panics
///
/// As [`renew`].
#[must_use]
pub fn respond(
    key: &SecretKey,
    trust: &Trust,
    revocations: &Revocations,
    bytes: &[u8],
    peer_id: &[u8],
    now_unix_secs: u64,
    certificate_ttl_secs: u64,
) -> AdmissionResponse {
    let renewed = Certificate::decode(bytes).and_then(|certificate| {
        renew(
            key,
            trust,
            revocations,
            &certificate,
            peer_id,
            now_unix_secs,
            certificate_ttl_secs,
        )
    });
    match renewed {
        Ok(certificate) => AdmissionResponse::Admitted {
            certificate,
            trust: trust.encode(),
        },
        Err(error) => AdmissionResponse::Refused {
            reason: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Role;
    use crate::labels::Labels;

    const NOW: u64 = 1_800_000_000;
    const PEER: &[u8] = b"peer";

    fn parts() -> (SecretKey, Trust) {
        let root = SecretKey::from_seed(Role::Root, [1; 32]);
        let publisher = SecretKey::from_seed(Role::Publisher, [2; 32]);
        let coordinator = SecretKey::from_seed(Role::Coordinator, [3; 32]);
        let trust = Trust::sign(
            &root,
            vec![publisher.public()],
            vec![coordinator.public()],
            1,
        )
        .unwrap();
        (coordinator, trust)
    }

    #[test]
    fn a_valid_certificate_is_renewed_with_its_labels_and_token() {
        let (key, trust) = parts();
        let labels: Labels = "region=eu1".parse().unwrap();
        let old = Certificate::issue(
            &key,
            PEER.to_vec(),
            labels.clone(),
            NOW,
            NOW + 90,
            Some([5; 16]),
        );
        let new = renew(
            &key,
            &trust,
            &Revocations::default(),
            &old,
            PEER,
            NOW + 80,
            90,
        )
        .unwrap();
        assert_eq!(new.labels(), &labels);
        assert_eq!(new.token_id(), Some([5; 16]));
        assert_eq!(new.expires_unix_secs(), NOW + 170);
        new.verify(&trust, PEER, NOW + 160).unwrap();
    }

    #[test]
    fn expired_foreign_and_revoked_certificates_are_not_renewed() {
        let (key, trust) = parts();
        let old = Certificate::issue(
            &key,
            PEER.to_vec(),
            Labels::default(),
            NOW,
            NOW + 90,
            Some([5; 16]),
        );
        let none = Revocations::default();
        assert!(matches!(
            renew(&key, &trust, &none, &old, PEER, NOW + 91, 90),
            Err(AdmissionError::CertificateExpired { .. })
        ));
        assert!(matches!(
            renew(&key, &trust, &none, &old, b"other", NOW, 90),
            Err(AdmissionError::CertificateForAnotherPeer { .. })
        ));
        let mut revoked = Revocations::default();
        revoked.revoke([5; 16], NOW + 1000, NOW).unwrap();
        assert!(matches!(
            renew(&key, &trust, &revoked, &old, PEER, NOW, 90),
            Err(AdmissionError::TokenRevoked(_))
        ));
        let AdmissionResponse::Refused { reason } =
            respond(&key, &trust, &none, b"\x01garbage", PEER, NOW, 90)
        else {
            panic!("garbage renewed");
        };
        assert!(reason.contains("corrupt"), "{reason}");
    }
}
