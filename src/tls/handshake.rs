//! Why a TLS handshake failed, in a small vocabulary for metrics and logs.

use rustls::{CertificateError, Error as TlsError};

use super::IdentityMismatch;

/// The reason a handshake (or the identity check right after it) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// The peer took longer than the handshake timeout.
    Timeout,
    /// The bytes were not TLS (plaintext HTTP to the mTLS port, say).
    NotTls,
    /// No protocol version in common (a TLS 1.2 client when 1.3 is required).
    ProtocolVersion,
    /// The client sent no certificate.
    NoClientCertificate,
    /// The certificate does not chain to the mesh CA.
    UnknownCa,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// Another certificate problem (bad signature, wrong usage, ...).
    BadCertificate,
    /// The server is a valid mesh workload, but not the expected one.
    PeerIdentity,
    /// The certificate carries no SPIFFE id.
    NoSpiffeId,
    /// The SPIFFE id belongs to another trust domain.
    ForeignTrustDomain,
    /// The peer refused our certificate (it sent an alert).
    PeerRefused,
    /// The connection broke during the handshake.
    Io,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::NotTls => "not-tls",
            Self::ProtocolVersion => "protocol-version",
            Self::NoClientCertificate => "no-client-certificate",
            Self::UnknownCa => "unknown-ca",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::BadCertificate => "bad-certificate",
            Self::PeerIdentity => "peer-identity",
            Self::NoSpiffeId => "no-spiffe-id",
            Self::ForeignTrustDomain => "foreign-trust-domain",
            Self::PeerRefused => "peer-refused",
            Self::Io => "io",
            Self::Other => "other",
        }
    }
}

/// Classifies the error of a failed `accept` or `connect`.
pub fn classify_error(err: &std::io::Error) -> HandshakeFailure {
    match err.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
        Some(tls) => classify_tls(tls),
        None => HandshakeFailure::Io,
    }
}

fn classify_tls(err: &TlsError) -> HandshakeFailure {
    match err {
        TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => {
            HandshakeFailure::NotTls
        }
        TlsError::PeerIncompatible(_) => HandshakeFailure::ProtocolVersion,
        TlsError::NoCertificatesPresented => HandshakeFailure::NoClientCertificate,
        TlsError::AlertReceived(_) => HandshakeFailure::PeerRefused,
        TlsError::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => HandshakeFailure::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                HandshakeFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                HandshakeFailure::NotYetValid
            }
            CertificateError::Other(other)
                if other.0.downcast_ref::<IdentityMismatch>().is_some() =>
            {
                HandshakeFailure::PeerIdentity
            }
            _ => HandshakeFailure::BadCertificate,
        },
        _ => HandshakeFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(err: TlsError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, err)
    }

    #[test]
    fn errors_map_to_reasons() {
        let cases = [
            (
                io(TlsError::NoCertificatesPresented),
                "no-client-certificate",
            ),
            (
                io(TlsError::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
                "unknown-ca",
            ),
            (
                io(TlsError::InvalidCertificate(CertificateError::Expired)),
                "expired",
            ),
            (
                io(TlsError::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                "not-tls",
            ),
            (
                io(TlsError::PeerIncompatible(
                    rustls::PeerIncompatible::SupportedVersionsExtensionRequired,
                )),
                "protocol-version",
            ),
            (
                io(TlsError::AlertReceived(
                    rustls::AlertDescription::BadCertificate,
                )),
                "peer-refused",
            ),
            (std::io::ErrorKind::ConnectionReset.into(), "io"),
        ];
        for (err, want) in cases {
            assert_eq!(classify_error(&err).as_str(), want, "{err}");
        }
    }
}
