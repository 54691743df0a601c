//! Loading this workload's certificate, key and CA bundle from PEM files,
//! and reading SPIFFE ids and validity out of certificates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::TlsConfig;
use crate::identity::SpiffeId;

/// Which of the three files a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The CA bundle (`tls.ca`).
    Ca,
    /// The certificate chain (`tls.cert`).
    Cert,
    /// The private key (`tls.key`).
    Key,
}

/// Why the certificate files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no usable PEM section of the expected kind.
    #[error("{}: {what}", path.display())]
    Pem {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The certificate does not say whose it is.
    #[error("{}: {what}", path.display())]
    Identity {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The key does not belong to the certificate, or cannot sign.
    #[error("{}: {what}", path.display())]
    Key {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The certificate is outside its validity period.
    #[error("{}: certificate {state}: valid from {} to {}, now {}", path.display(),
        humantime::format_rfc3339_seconds(*not_before),
        humantime::format_rfc3339_seconds(*not_after),
        humantime::format_rfc3339_seconds(*now))]
    Validity {
        /// Its path.
        path: PathBuf,
        /// "has expired" or "is not valid yet".
        state: &'static str,
        /// Start of validity.
        not_before: SystemTime,
        /// End of validity.
        not_after: SystemTime,
        /// The time of the check.
        now: SystemTime,
    },
}

impl CredentialError {
    /// Which config field the problem belongs to.
    pub fn file(&self) -> TlsFile {
        match self {
            Self::Read { file, .. } | Self::Pem { file, .. } => *file,
            Self::Identity { .. } | Self::Validity { .. } => TlsFile::Cert,
            Self::Key { .. } => TlsFile::Key,
        }
    }
}

/// What we read out of a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    /// The SPIFFE id in its URI SAN.
    pub identity: Option<SpiffeId>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial number, lowercase hex.
    pub serial: String,
}

/// Reads validity, serial and the SPIFFE id of a DER certificate.
///
/// A SPIFFE X.509 SVID has exactly one URI SAN; several, or a URI that is not
/// a valid SPIFFE id, give `identity: None`.
pub fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("unreadable subjectAltName: {e}")),
    };
    let identity = match uris.as_slice() {
        [one] => SpiffeId::parse(one).ok(),
        _ => None,
    };
    let validity = cert.validity();
    Ok(LeafInfo {
        identity,
        not_before: to_system_time(validity.not_before.timestamp()),
        not_after: to_system_time(validity.not_after.timestamp()),
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

fn to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// Everything this workload needs for mTLS, loaded and checked.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Our SPIFFE id, from our certificate.
    pub identity: SpiffeId,
    /// Our chain and signing key.
    pub certified_key: Arc<CertifiedKey>,
    /// The CA bundle peers must chain to.
    pub roots: Arc<RootCertStore>,
    /// Facts about our leaf certificate.
    pub leaf: LeafInfo,
    /// A digest of the three files' bytes, to tell a real change from a
    /// file event that rewrote the same contents.
    pub digest: u64,
}

impl Credentials {
    /// Loads and checks the three files: PEM syntax, the key matches the
    /// certificate, the certificate carries a SPIFFE id and is valid at `now`.
    pub fn load(files: &TlsConfig, now: SystemTime) -> Result<Self, CredentialError> {
        let ca_bytes = read(TlsFile::Ca, files.ca.get())?;
        let cert_bytes = read(TlsFile::Cert, files.cert.get())?;
        let key_bytes = read(TlsFile::Key, files.key.get())?;
        let digest = digest_of(&ca_bytes, &cert_bytes, &key_bytes);
        let roots = load_roots(files.ca.get(), &ca_bytes)?;
        let chain = load_certs(TlsFile::Cert, files.cert.get(), &cert_bytes)?;
        let key = load_key(files.key.get(), &key_bytes)?;
        let cert_path = files.cert.get();

        let leaf = leaf_info(&chain[0]).map_err(|what| CredentialError::Pem {
            file: TlsFile::Cert,
            path: cert_path.clone(),
            what,
        })?;
        let identity = leaf
            .identity
            .clone()
            .ok_or_else(|| CredentialError::Identity {
                path: cert_path.clone(),
                what: "the certificate has no SPIFFE id (exactly one URI SAN spiffe://...); \
                   issue one with `pilotfish certs issue`"
                    .to_owned(),
            })?;
        let validity_error = |state| CredentialError::Validity {
            path: cert_path.clone(),
            state,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            now,
        };
        if now < leaf.not_before {
            return Err(validity_error("is not valid yet"));
        }
        if now > leaf.not_after {
            return Err(validity_error("has expired"));
        }

        let certified_key = certified_key(chain, key, cert_path, files.key.get())?;
        Ok(Self {
            identity,
            certified_key: Arc::new(certified_key),
            roots: Arc::new(roots),
            leaf,
            digest,
        })
    }
}

/// The digest of the three files as they are now, cheaper than a load: to
/// tell whether anything changed since the credentials in force were read.
pub fn digest_files(files: &TlsConfig) -> Result<u64, CredentialError> {
    Ok(digest_of(
        &read(TlsFile::Ca, files.ca.get())?,
        &read(TlsFile::Cert, files.cert.get())?,
        &read(TlsFile::Key, files.key.get())?,
    ))
}

fn digest_of(ca: &[u8], cert: &[u8], key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (ca, cert, key).hash(&mut hasher);
    hasher.finish()
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|source| CredentialError::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(file: TlsFile, path: &Path, what: impl Into<String>) -> CredentialError {
    CredentialError::Pem {
        file,
        path: path.to_owned(),
        what: what.into(),
    }
}

fn load_certs(
    file: TlsFile,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(file, path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            file,
            path,
            "no certificate found (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// A CA bundle: one or more CA certificates (several while a trust anchor
/// is being rotated).
fn load_roots(path: &Path, bytes: &[u8]) -> Result<RootCertStore, CredentialError> {
    let certs = load_certs(TlsFile::Ca, path, bytes)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            pem_error(
                TlsFile::Ca,
                path,
                format!("certificate {} is not a usable CA: {e}", i + 1),
            )
        })?;
    }
    Ok(roots)
}

fn load_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, CredentialError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        let what = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key found (expected -----BEGIN PRIVATE KEY-----)".to_owned()
            }
            other => format!("bad PEM: {other}"),
        };
        pem_error(TlsFile::Key, path, what)
    })
}

/// A server certificate for clients outside the mesh (the gateway's
/// HTTPS listener): any chain, no SPIFFE id required, its key checked
/// against it and its dates against `now`.
pub fn load_server_certificate(
    cert: &Path,
    key: &Path,
    now: SystemTime,
) -> Result<Arc<CertifiedKey>, CredentialError> {
    let cert_bytes = read(TlsFile::Cert, cert)?;
    let key_bytes = read(TlsFile::Key, key)?;
    let chain = load_certs(TlsFile::Cert, cert, &cert_bytes)?;
    let private = load_key(key, &key_bytes)?;
    let leaf = leaf_info(&chain[0]).map_err(|what| pem_error(TlsFile::Cert, cert, what))?;
    if now < leaf.not_before || now > leaf.not_after {
        return Err(CredentialError::Validity {
            path: cert.to_owned(),
            state: if now < leaf.not_before {
                "is not valid yet"
            } else {
                "has expired"
            },
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            now,
        });
    }
    let certified = certified_key(chain, private, cert, key)?;
    Ok(Arc::new(certified))
}

/// The chain and its key as rustls signs with them; the key must belong
/// to the leaf.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, CredentialError> {
    CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| CredentialError::Key {
        path: key_path.to_owned(),
        what: match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key does not belong to the certificate in {}",
                cert_path.display()
            ),
            other => format!("unusable private key: {other}"),
        },
    })
}
