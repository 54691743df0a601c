//! mTLS for the mesh link: rustls configs for the inbound server (client
//! certificate required) and the outbound client (SPIFFE id verified),
//! TLS 1.3 by default, aws-lc-rs crypto, and the live credential store.

mod check;
mod credentials;
mod handshake;
mod store;
mod verify;

use std::sync::{Arc, OnceLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

pub use check::check_certificates;
pub use credentials::{
    CredentialError, Credentials, LeafInfo, TlsFile, digest_files, leaf_info,
    load_server_certificate,
};
pub use handshake::{HandshakeFailure, classify_error};
pub use store::{CredentialStore, Derived};
pub use verify::{IdentityMismatch, SpiffeServerVerifier};

use crate::config::{TlsConfig, TlsVersion};
use crate::identity::SpiffeId;

/// ALPN id of HTTP/2, the multiplexed mesh link.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1: the pooled mesh link, and callers outside the
/// mesh (load generators, probes).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The one crypto provider (aws-lc-rs), shared by every config.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// TLS settings from the config that shape the rustls configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsSettings {
    /// Lowest protocol version.
    pub min_version: TlsVersion,
}

impl TlsSettings {
    /// The settings of a `tls:` section.
    pub fn from_config(tls: &TlsConfig) -> Self {
        Self {
            min_version: *tls.min_version,
        }
    }

    /// The versions to enable. rustls offers TLS 1.2 only with ECDHE key
    /// exchange and AEAD ciphers, so enabling it adds no weak suites.
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        static TLS13_AND_12: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        match self.min_version {
            TlsVersion::Tls13 => &TLS13_ONLY,
            TlsVersion::Tls12 => &TLS13_AND_12,
        }
    }
}

/// The inbound server config: a client certificate chaining to the mesh CA
/// is required, ALPN h2 then http/1.1, stateless session tickets (their key
/// is new with every config, so credentials changes end old sessions).
pub fn server_config(
    creds: &Credentials,
    settings: TlsSettings,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(creds.roots.clone(), provider())
        .build()
        .map_err(|e| rustls::Error::General(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(settings.versions())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(OwnCert(creds.certified_key.clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// The gateway's server config, for clients outside the mesh: no client
/// certificate, TLS 1.2 (ECDHE and AEAD suites only, as `TlsVersion`
/// allows) and 1.3, since browsers and older clients still offer 1.2;
/// ALPN h2 then http/1.1.
pub fn edge_server_config(key: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let settings = TlsSettings {
        min_version: TlsVersion::Tls12,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(settings.versions())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OwnCert(key)));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// The outbound client config for one destination: presents our
/// certificate, requires the server to prove `expected`, offers the one
/// ALPN protocol `alpn` (the link's HTTP version), and keeps session
/// tickets so a reconnect to the same peer resumes.
pub fn client_config(
    creds: &Credentials,
    expected: SpiffeId,
    settings: TlsSettings,
    alpn: &[u8],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let verifier = SpiffeServerVerifier::new(creds.roots.clone(), expected);
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(settings.versions())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(OwnCert(creds.certified_key.clone())));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The verified SPIFFE id of the peer of an accepted connection.
pub fn peer_identity(conn: &rustls::ServerConnection) -> Result<SpiffeId, String> {
    let leaf: &CertificateDer<'_> = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| "the peer presented no client certificate".to_owned())?;
    leaf_info(leaf)?.identity.ok_or_else(|| {
        "the client certificate has no SPIFFE id (one URI SAN spiffe://...)".to_owned()
    })
}

/// Always presents this workload's certificate, as server and as client.
#[derive(Debug)]
struct OwnCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
