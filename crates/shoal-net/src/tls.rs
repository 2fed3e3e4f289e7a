//! TLS 1.3 configurations for the data plane, with libp2p certificates.
//!
//! Each side presents the certificate libp2p-tls generates for its node key: a self-signed
//! certificate whose extension carries the node's public key and a signature by it, so the
//! certificate proves a libp2p peer id. Each side checks the other's certificate with
//! [`libp2p_tls::certificate::parse`] (which verifies that binding) and the handshake signature
//! against the certificate's key, so a connection is authenticated as that peer id.
//!
//! libp2p-tls builds such configurations itself, but prefers ChaCha20-Poly1305. On CPUs with AES
//! instructions AES-GCM costs less per byte, and on the swarm benchmark's 2-core machine the data
//! plane is bound by exactly that cost, so these configurations prefer AES-128-GCM.

use anyhow::{Context, Result};
use libp2p_identity::Keypair;
use libp2p_tls::certificate;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, OtherError,
    SignatureScheme,
};
use std::sync::Arc;

/// The ALPN protocol both sides announce.
const ALPN: &[u8] = b"libp2p";

/// Handshake signature schemes accepted: those of the certificate keys libp2p-tls generates
/// (ECDSA P-256) and the other key types it can verify without RSA.
const SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
];

fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// A TLS client configuration that presents `keypair`'s certificate and accepts any peer with a
/// valid libp2p certificate; the caller reads the proven peer id off the connection.
///
/// # Errors
///
/// If the certificate cannot be generated.
pub fn client_config(keypair: &Keypair) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let cert = OwnCertificate::new(keypair, &provider)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerCertVerifier))
        .with_client_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A TLS server configuration that presents `keypair`'s certificate and requires a valid libp2p
/// certificate from every client.
///
/// # Errors
///
/// If the certificate cannot be generated.
pub fn server_config(keypair: &Keypair) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let cert = OwnCertificate::new(keypair, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerCertVerifier))
        .with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// This node's certificate and key, offered in every handshake. (rustls's own single-certificate
/// setup would refuse it: the libp2p extension is marked critical, and only the verifier below
/// knows it.)
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl OwnCertificate {
    fn new(keypair: &Keypair, provider: &CryptoProvider) -> Result<Self> {
        let (cert, key) =
            certificate::generate(keypair).context("cannot make a TLS certificate")?;
        let key = provider
            .key_provider
            .load_private_key(key)
            .context("cannot load the TLS certificate's key")?;
        Ok(Self(Arc::new(CertifiedKey::new(vec![cert], key))))
    }
}

impl ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks libp2p certificates, in both directions.
#[derive(Debug)]
struct PeerCertVerifier;

fn bad_certificate(e: impl std::error::Error + Send + Sync + 'static) -> TlsError {
    TlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// A libp2p certificate stands alone: self-signed, no chain.
fn check_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), TlsError> {
    if !intermediates.is_empty() {
        return Err(TlsError::General(
            "a libp2p certificate comes without intermediates".into(),
        ));
    }
    certificate::parse(end_entity).map_err(bad_certificate)?;
    Ok(())
}

fn check_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, TlsError> {
    let parsed = certificate::parse(cert).map_err(bad_certificate)?;
    parsed
        .verify_signature(dss.scheme, message, dss.signature())
        .map_err(|_| TlsError::InvalidCertificate(CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

fn no_tls12() -> TlsError {
    TlsError::General("TLS 1.2 is not used on the data plane".into())
}

impl ServerCertVerifier for PeerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        check_certificate(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

impl ClientCertVerifier for PeerCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        check_certificate(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> CertificateDer<'static> {
        certificate::generate(&Keypair::ed25519_from_bytes([1; 32]).unwrap())
            .unwrap()
            .0
    }

    #[test]
    fn refuses_what_is_not_a_lone_libp2p_certificate() {
        let now = UnixTime::now();
        let name = ServerName::try_from("shoal").unwrap();
        let v = PeerCertVerifier;
        assert!(v.verify_server_cert(&cert(), &[], &name, &[], now).is_ok());
        assert!(
            v.verify_server_cert(&cert(), &[cert()], &name, &[], now)
                .is_err()
        );
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(
            v.verify_server_cert(&garbage, &[], &name, &[], now)
                .is_err()
        );
        assert!(v.verify_client_cert(&garbage, &[], now).is_err());
    }
}
