//! `pilotfish certs`: a development CA and SPIFFE workload certificates,
//! made with rcgen. For laptops, tests and demos; in production a real CA
//! (cert-manager, SPIRE, Vault) issues the certificates.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};

use crate::identity::{ServiceName, SpiffeId, check_namespace, check_trust_domain};

/// Certificates start this long in the past, so a peer whose clock is a
/// little behind does not see them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(60);

/// Default lifetime of a development CA.
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default lifetime of a workload certificate: short, as in Linkerd and
/// Istio, so a leaked key is soon useless.
pub const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The output file exists and `force` was not given.
    #[error("{} already exists; pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA files are not a usable CA.
    #[error("{}: {what}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A name is not valid.
    #[error("{0}")]
    Name(String),
    /// rcgen failed.
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A signing key file is not a usable key.
    #[error("{}: {what}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A token could not be signed.
    #[error("cannot sign the token: {0}")]
    Token(String),
}

/// Files written by [`make_ca`].
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The CA certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
}

/// Files written by [`issue`].
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    /// The workload certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
    /// The SPIFFE id it carries.
    pub identity: SpiffeId,
}

/// The workload a certificate is for.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Service (account) name.
    pub service: ServiceName,
    /// Namespace.
    pub namespace: String,
    /// Trust domain.
    pub trust_domain: String,
}

impl Workload {
    /// A workload, with its names checked.
    pub fn new(service: &str, namespace: &str, trust_domain: &str) -> Result<Self, CertError> {
        let name_error = |e: crate::identity::InvalidName| CertError::Name(e.to_string());
        check_namespace(namespace).map_err(name_error)?;
        check_trust_domain(trust_domain).map_err(name_error)?;
        Ok(Self {
            service: ServiceName::new(service).map_err(name_error)?,
            namespace: namespace.to_owned(),
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// Its SPIFFE id.
    pub fn identity(&self) -> SpiffeId {
        SpiffeId::for_service(&self.trust_domain, &self.namespace, self.service.as_str())
    }
}

/// Makes a development CA in `out`: `ca.pem` and `ca-key.pem`.
pub fn make_ca(out: &Path, ttl: Duration, force: bool) -> Result<CaFiles, CertError> {
    let files = CaFiles {
        cert: out.join("ca.pem"),
        key: out.join("ca-key.pem"),
    };
    refuse_existing(&[&files.cert, &files.key], force)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Pilotfish development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, ttl);
    let cert = params.self_signed(&key)?;
    create_dir(out)?;
    write_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
    write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(files)
}

/// Issues a certificate for `workload`, signed by the CA in `ca_dir`,
/// into `out`: `NAME.pem` and `NAME-key.pem`. The identity is the URI SAN
/// `spiffe://TD/ns/NS/sa/NAME`; DNS SANs are `NAME`, `NAME.NS` and
/// `NAME.NS.svc.cluster.local`.
pub fn issue(
    ca_dir: &Path,
    workload: &Workload,
    ttl: Duration,
    out: &Path,
    force: bool,
) -> Result<IssuedFiles, CertError> {
    let name = workload.service.as_str();
    let ns = &workload.namespace;
    let identity = workload.identity();
    let files = IssuedFiles {
        cert: out.join(format!("{name}.pem")),
        key: out.join(format!("{name}-key.pem")),
        identity: identity.clone(),
    };
    refuse_existing(&[&files.cert, &files.key], force)?;
    let issuer = load_ca(ca_dir)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let ia5 = |s: String| Ia5String::try_from(s).map_err(|e| CertError::Name(e.to_string()));
    params.subject_alt_names = vec![
        SanType::URI(ia5(identity.as_str().to_owned())?),
        SanType::DnsName(ia5(name.to_owned())?),
        SanType::DnsName(ia5(format!("{name}.{ns}"))?),
        SanType::DnsName(ia5(format!("{name}.{ns}.svc.cluster.local"))?),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, ttl);
    let cert = params.signed_by(&key, &issuer)?;
    create_dir(out)?;
    write_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
    write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(files)
}

fn load_ca(ca_dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let cert_path = ca_dir.join("ca.pem");
    let key_path = ca_dir.join("ca-key.pem");
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CertError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::BadCa {
        path: key_path.clone(),
        what: format!("not a usable private key: {e}"),
    })?;
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CertError::BadCa {
        path: cert_path,
        what: format!("not a usable CA certificate: {e}"),
    })
}

/// Valid from a minute ago for `ttl`, with a random serial number.
fn set_validity(params: &mut CertificateParams, ttl: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ttl).into();
    let mut serial = [0u8; 16];
    fastrand::fill(&mut serial);
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

fn refuse_existing(paths: &[&PathBuf], force: bool) -> Result<(), CertError> {
    if !force {
        if let Some(existing) = paths.iter().find(|p| p.exists()) {
            return Err(CertError::Exists((*existing).clone()));
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a sidecar watching the
/// folder never reads half a file; the mode is set before any byte is written.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_error = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    std::fs::rename(&tmp, path).map_err(io_error)
}

/// The `kid` of the key `certs jwt` makes, in its `jwks.json`.
pub const DEMO_KID: &str = "demo";

/// Files written by [`make_jwt_keys`].
#[derive(Debug, Clone)]
pub struct JwtFiles {
    /// The Ed25519 private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// Its public key (PEM), for `jwt.keys: [{pem: ...}]`.
    pub public: PathBuf,
    /// A JWKS with the public key (`kid` [`DEMO_KID`], `alg` EdDSA), for
    /// `jwks_file` or to serve at a `jwks_url`.
    pub jwks: PathBuf,
    /// The key was there already and was kept.
    pub kept: bool,
}

/// Makes a development token signing key in `out`: `jwt.key`, `jwt.pub`
/// and `jwks.json`. An existing `jwt.key` is kept (tokens signed with it
/// stay good) and the other two are written again from it.
pub fn make_jwt_keys(out: &Path) -> Result<JwtFiles, CertError> {
    let files = JwtFiles {
        key: out.join("jwt.key"),
        public: out.join("jwt.pub"),
        jwks: out.join("jwks.json"),
        kept: out.join("jwt.key").exists(),
    };
    let key = if files.kept {
        let bad = |what: String| CertError::BadKey {
            path: files.key.clone(),
            what,
        };
        let pem = std::fs::read_to_string(&files.key).map_err(|source| CertError::Io {
            path: files.key.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        if key.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(bad(
                "not an Ed25519 key; move it away to make a new one".into()
            ));
        }
        key
    } else {
        KeyPair::generate_for(&rcgen::PKCS_ED25519)?
    };
    let private_pem = key.serialize_pem();
    let jwks = serde_json::json!({ "keys": [ed25519_jwk(key.public_key_raw(), DEMO_KID)] });
    create_dir(out)?;
    if !files.kept {
        write_file(&files.key, private_pem.as_bytes(), 0o600)?;
    }
    write_file(&files.public, key.public_key_pem().as_bytes(), 0o644)?;
    let jwks = serde_json::to_string_pretty(&jwks).map_err(|e| CertError::Token(e.to_string()))?;
    write_file(&files.jwks, format!("{jwks}\n").as_bytes(), 0o644)?;
    Ok(files)
}

/// The JWK of an Ed25519 public key (RFC 8037): `kty` OKP, `x` the raw
/// 32 bytes. (jsonwebtoken's `Jwk::from_encoding_key` has no Ed25519.)
pub fn ed25519_jwk(public_raw: &[u8], kid: &str) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64url(public_raw),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    })
}

/// Base64url without padding (RFC 4648 5), as JOSE writes bytes.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// What a token says, for [`sign_token`].
#[derive(Debug, Clone)]
pub struct TokenClaims {
    /// `sub`.
    pub subject: String,
    /// `roles`, a list (left out when empty).
    pub roles: Vec<String>,
    /// `scope`, space-separated (left out when `None`).
    pub scope: Option<String>,
    /// `iss` (left out when empty).
    pub issuer: String,
    /// `aud` (left out when empty).
    pub audience: String,
    /// `exp` is this long after `iat`.
    pub ttl: Duration,
    /// The header's `kid`.
    pub kid: Option<String>,
}

/// The key a token is signed with.
#[derive(Debug, Clone)]
pub enum SigningKey {
    /// A PEM private key: Ed25519 (EdDSA), EC P-256 (ES256) or RSA (RS256).
    Pem(PathBuf),
    /// A file holding an HMAC secret (HS256), 32 bytes at least.
    SecretFile(PathBuf),
}

/// Signs a token with `key`, for trying the gateway.
pub fn sign_token(key: &SigningKey, claims: &TokenClaims) -> Result<String, CertError> {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let (SigningKey::Pem(p) | SigningKey::SecretFile(p)) = key;
    let contents = std::fs::read(p).map_err(|source| CertError::Io {
        path: p.clone(),
        source,
    })?;
    let bad = |what: &str| CertError::BadKey {
        path: p.clone(),
        what: what.to_owned(),
    };
    let (encoding, alg) = match key {
        SigningKey::SecretFile(_) => {
            // A trailing newline is not part of the secret (as the gateway reads it).
            let secret = contents.trim_ascii_end();
            if secret.len() < 32 {
                return Err(bad("an HMAC secret needs 32 bytes at least"));
            }
            (EncodingKey::from_secret(secret), Algorithm::HS256)
        }
        SigningKey::Pem(_) => {
            if let Ok(key) = EncodingKey::from_ed_pem(&contents) {
                (key, Algorithm::EdDSA)
            } else if let Ok(key) = EncodingKey::from_ec_pem(&contents) {
                (key, Algorithm::ES256)
            } else if let Ok(key) = EncodingKey::from_rsa_pem(&contents) {
                (key, Algorithm::RS256)
            } else {
                return Err(bad("not a PEM private key (Ed25519, EC P-256 or RSA)"));
            }
        }
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut body = serde_json::json!({
        "sub": claims.subject,
        "iat": now,
        "exp": now + claims.ttl.as_secs(),
    });
    if !claims.issuer.is_empty() {
        body["iss"] = claims.issuer.clone().into();
    }
    if !claims.audience.is_empty() {
        body["aud"] = claims.audience.clone().into();
    }
    if !claims.roles.is_empty() {
        body["roles"] = claims.roles.clone().into();
    }
    if let Some(scope) = &claims.scope {
        body["scope"] = scope.clone().into();
    }
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = claims.kid.clone();
    jsonwebtoken::encode(&header, &body, &encoding).map_err(|e| match alg {
        Algorithm::ES256 => bad(&format!("{e} (an EC key must be P-256 for ES256)")),
        _ => CertError::Token(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_has_no_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
