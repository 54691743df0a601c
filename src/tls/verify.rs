//! Server certificate verification for the mesh link: the certificate must
//! chain to the mesh CA *and* carry the SPIFFE id expected for the
//! destination. Host names are not checked: in a mesh the identity is what
//! the caller asked for, and an IP or service alias proves nothing.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use super::credentials::leaf_info;
use crate::identity::SpiffeId;

/// The server presented a valid certificate for the wrong workload.
#[derive(Debug, thiserror::Error)]
#[error("peer identity mismatch: expected {expected}, the certificate says {presented}")]
pub struct IdentityMismatch {
    /// What the route asked for.
    pub expected: SpiffeId,
    /// What the certificate carries (or why it carries nothing usable).
    pub presented: String,
}

/// Verifies a mesh server certificate against the CA and one SPIFFE id.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// A verifier for servers that must prove `expected`.
    pub fn new(roots: Arc<RootCertStore>, expected: SpiffeId) -> Self {
        Self {
            roots,
            expected,
            algorithms: super::provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented = leaf_info(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?
            .identity;
        match presented {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            other => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(IdentityMismatch {
                    expected: self.expected.clone(),
                    presented: other
                        .map_or_else(|| "no SPIFFE id".to_owned(), |id| id.as_str().to_owned()),
                })),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
