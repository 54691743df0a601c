//! The edge gateway under test: a Pilotfish with `service: gateway` and a
//! `gateway:` section, in front of mesh destinations (an echo app behind
//! its own sidecar) and plaintext ones (a "monolith"); token signing keys
//! of each kind, tokens, and a server certificate for the HTTPS listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ED25519, PKCS_RSA_SHA256,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{Certs, Collected, Sidecar, SidecarConfig, TestBody, collect, empty, path_str};

/// The `iss` the test gateways expect.
pub const ISSUER: &str = "https://issuer.test";
/// The `aud` the test gateways expect.
pub const AUDIENCE: &str = "api";
/// The `kid` of the EC P-256 key in the JWKS file.
pub const EC_KID: &str = "k1";
/// The `kid` of the Ed25519 key in the JWKS file.
pub const ED_KID: &str = "ed1";
/// The `kid` of an EC key that is not in the JWKS file at first.
pub const EC2_KID: &str = "k2";

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a request the echo app got looked like.
#[derive(Debug, Clone)]
pub struct Got {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

impl Got {
    /// A header's values as text.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// A header's (first) value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }
}

/// A plain HTTP app answering every path 200 with JSON of what it got and
/// its own name (`x-backend` too), plus `x-internal: secret` (for a route
/// to remove); HTTP/1.1 and h2c.
pub struct EchoApp {
    pub name: String,
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoApp {
    /// Starts on a free loopback port.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let (got2, name2) = (got.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (got, name) = (got2.clone(), name2.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| echo(req, got.clone(), name.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            got,
            task,
        }
    }

    /// The requests it got so far.
    pub fn got(&self) -> Vec<Got> {
        self.got.lock().expect("got").clone()
    }

    /// How many requests it got.
    pub fn count(&self) -> usize {
        self.got.lock().expect("got").len()
    }

    /// The last request it got.
    pub fn last(&self) -> Got {
        self.got().pop().expect("a request reached the app")
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    req: Request<Incoming>,
    got: Arc<Mutex<Vec<Got>>>,
    name: String,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body_bytes = body.collect().await.map_or(0, |b| b.to_bytes().len());
    let seen = Got {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
    };
    got.lock().expect("got").push(seen.clone());
    let mut headers = serde_json::Map::new();
    for key in parts.headers.keys() {
        headers.insert(key.as_str().to_owned(), json!(seen.all(key.as_str())));
    }
    let text = json!({
        "app": name,
        "method": seen.method,
        "path": seen.path,
        "query": seen.query,
        "headers": headers,
        "body_bytes": body_bytes,
    })
    .to_string();
    let mut response = Response::new(Full::new(Bytes::from(text)));
    let h = response.headers_mut();
    h.insert("content-type", "application/json".parse().expect("value"));
    h.insert("x-backend", name.parse().expect("app name"));
    h.insert("x-internal", "secret".parse().expect("value"));
    Ok(response)
}

/// A mesh destination: an echo app behind its own sidecar (`inbound:`),
/// which the gateway reaches over mTLS.
pub struct MeshService {
    pub app: EchoApp,
    pub sidecar: Sidecar,
}

impl MeshService {
    /// Starts `service`'s app and sidecar.
    pub async fn start(certs: &Certs, service: &str) -> Self {
        let app = EchoApp::start(service).await;
        let sidecar = Sidecar::start(&SidecarConfig::new(service, certs).inbound(app.addr));
        Self { app, sidecar }
    }

    /// The address the gateway dials.
    pub fn endpoint(&self) -> SocketAddr {
        self.sidecar.inbound()
    }
}

/// Token signing keys of every kind the gateway verifies, and the files
/// it reads them from: `rsa.pub` (PEM), `jwks.json` (the EC key `k1` and
/// the Ed25519 key `ed1`), `hmac.key` (a 32-byte secret).
pub struct TokenKeys {
    pub dir: tempfile::TempDir,
    pub rsa: EncodingKey,
    pub rsa_public_pem: String,
    pub ec: EncodingKey,
    pub ed: EncodingKey,
    /// The Ed25519 public key, raw (for its JWK).
    pub ed_public: Vec<u8>,
    /// Not in the JWKS file until a test puts it there.
    pub ec2: EncodingKey,
    pub secret: Vec<u8>,
}

impl TokenKeys {
    /// Fresh keys, written to a temporary folder.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let rsa_pair = KeyPair::generate_for(&PKCS_RSA_SHA256).expect("RSA key");
        let rsa = EncodingKey::from_rsa_pem(rsa_pair.serialize_pem().as_bytes()).expect("RSA");
        let rsa_public_pem = rsa_pair.public_key_pem();
        let ec_key = || {
            let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("EC key");
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("EC")
        };
        let ed_pair = KeyPair::generate_for(&PKCS_ED25519).expect("Ed25519 key");
        let ed = EncodingKey::from_ed_pem(ed_pair.serialize_pem().as_bytes()).expect("Ed25519");
        // Printable: the gateway trims a secret file's trailing whitespace.
        let secret: Vec<u8> = (0..48).map(|_| fastrand::alphanumeric() as u8).collect();
        let keys = Self {
            dir,
            rsa,
            rsa_public_pem,
            ec: ec_key(),
            ed,
            ed_public: ed_pair.public_key_raw().to_vec(),
            ec2: ec_key(),
            secret,
        };
        std::fs::write(keys.pem_path(), &keys.rsa_public_pem).expect("write rsa.pub");
        std::fs::write(keys.secret_path(), &keys.secret).expect("write hmac.key");
        keys.write_jwks(&[keys.jwk(EC_KID), keys.jwk(ED_KID)]);
        keys
    }

    pub fn pem_path(&self) -> PathBuf {
        self.dir.path().join("rsa.pub")
    }

    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    pub fn secret_path(&self) -> PathBuf {
        self.dir.path().join("hmac.key")
    }

    /// The public JWK of the key `kid` (`k1`, `k2` or `ed1`).
    pub fn jwk(&self, kid: &str) -> Value {
        let key = match kid {
            EC_KID => &self.ec,
            EC2_KID => &self.ec2,
            // jsonwebtoken cannot make an OKP JWK (RFC 8037) itself.
            ED_KID => {
                return json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "kid": kid,
                    "x": base64url(&self.ed_public),
                });
            }
            other => panic!("no key {other}"),
        };
        let alg = Algorithm::ES256;
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(key, alg).expect("jwk");
        let mut jwk = serde_json::to_value(jwk).expect("jwk JSON");
        jwk["kid"] = json!(kid);
        // Only the public parts (from_encoding_key gives those; be sure).
        if let Some(object) = jwk.as_object_mut() {
            object.remove("d");
        }
        jwk
    }

    /// Replaces the JWKS file the way a deploy does: a new file renamed
    /// over the old one.
    pub fn write_jwks(&self, keys: &[Value]) {
        let tmp = self.dir.path().join("jwks.json.new");
        std::fs::write(&tmp, json!({ "keys": keys }).to_string()).expect("write JWKS");
        std::fs::rename(&tmp, self.jwks_path()).expect("rename JWKS");
    }

    /// `keys:` entries (YAML flow list) for the PEM key and the JWKS file.
    pub fn pem_and_jwks(&self) -> String {
        format!(
            "[{{ pem: {} }}, {{ jwks_file: {} }}]",
            path_str(&self.pem_path()),
            path_str(&self.jwks_path())
        )
    }

    /// `keys:` entry for the HMAC secret only.
    pub fn secret_only(&self) -> String {
        format!("[{{ secret_file: {} }}]", path_str(&self.secret_path()))
    }

    /// RS256 with the PEM key (no `kid`: the one unnamed key).
    pub fn rs256(&self, claims: &Value) -> String {
        sign(Algorithm::RS256, None, &self.rsa, claims)
    }

    /// ES256 with the JWKS key `k1`.
    pub fn es256(&self, claims: &Value) -> String {
        sign(Algorithm::ES256, Some(EC_KID), &self.ec, claims)
    }

    /// EdDSA with the JWKS key `ed1`.
    pub fn eddsa(&self, claims: &Value) -> String {
        sign(Algorithm::EdDSA, Some(ED_KID), &self.ed, claims)
    }

    /// HS256 with the secret.
    pub fn hs256(&self, claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(&self.secret),
            claims,
        )
    }
}

/// Base64url without padding (RFC 4648 5).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// A signed token.
pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign token")
}

/// Good claims for `sub` with `roles`, valid for ten minutes.
pub fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "roles": roles,
        "email": format!("{sub}@example.test"),
        "iat": now(),
        "exp": now() + 600,
    })
}

/// `claims` with fields changed (a `null` removes one).
pub fn with(mut claims: Value, change: Value) -> Value {
    for (k, v) in change.as_object().expect("object") {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// A server certificate for `localhost` from a CA of its own, for the
/// gateway's HTTPS listener, and that CA for clients.
pub struct ServerCert {
    pub dir: tempfile::TempDir,
}

impl ServerCert {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("server cert");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        std::fs::write(dir.path().join("server.pem"), leaf.pem()).expect("write cert");
        std::fs::write(dir.path().join("server-key.pem"), key.serialize_pem()).expect("write key");
        Self { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// The `tls:` line under `gateway:` (2-space indent).
    pub fn yaml(&self) -> String {
        format!(
            "  tls: {{ listen: 127.0.0.1:0, cert: {}, key: {} }}\n",
            path_str(&self.cert()),
            path_str(&self.key())
        )
    }
}

/// The config of a gateway process.
pub struct GatewaySetup {
    config: SidecarConfig,
    /// YAML under `gateway:` (2-space indent), after `listen:`.
    pub gateway: String,
}

impl GatewaySetup {
    /// A gateway (`service: gateway`, its own mesh certificate) with a
    /// plain HTTP listener; add services, then `gateway` lines.
    pub fn new(certs: &Certs) -> Self {
        Self::with_leaf(certs, certs.issue("gateway"))
    }

    /// The same with a certificate issued already (for a config rewritten
    /// later with the same files).
    pub fn with_leaf(certs: &Certs, leaf: super::Leaf) -> Self {
        Self {
            config: SidecarConfig::with_leaf("gateway", certs, leaf)
                .outbound()
                .extra("access_log:\n  format: json\n"),
            gateway: String::new(),
        }
    }

    /// A mesh destination (mTLS).
    pub fn mesh(mut self, name: &str, endpoints: &[SocketAddr]) -> Self {
        self.config = self.config.service(name, endpoints, "");
        self
    }

    /// A plaintext destination.
    pub fn plain(mut self, name: &str, endpoints: &[SocketAddr]) -> Self {
        self.config = self
            .config
            .service(name, endpoints, "      transport: plaintext\n");
        self
    }

    /// Lines under `gateway:` (2-space indent).
    pub fn gateway(mut self, yaml: &str) -> Self {
        self.gateway.push_str(yaml);
        self
    }

    /// Top-level YAML (such as `http:`).
    pub fn extra(mut self, yaml: &str) -> Self {
        self.config = self.config.extra(yaml);
        self
    }

    /// The config text; pilotfish's own debug logs are on, so that a
    /// token written to any log line would be seen.
    pub fn yaml(&self) -> String {
        self.yaml_with_hops(0)
    }

    /// The config text with `trusted_hops: hops`.
    pub fn yaml_with_hops(&self, hops: u32) -> String {
        let y = self.config.yaml().replacen(
            "\nlog:\n  format: json\n",
            "\nlog:\n  format: json\n  level: info,pilotfish=debug\n",
            1,
        );
        format!(
            "{y}gateway:\n  listen: 127.0.0.1:0\n  trusted_hops: {hops}\n{}",
            self.gateway
        )
    }

    /// Starts it and waits until it is ready.
    pub fn start(&self) -> Sidecar {
        self.start_with_hops(0)
    }

    /// Starts it with `trusted_hops: hops`.
    pub fn start_with_hops(&self, hops: u32) -> Sidecar {
        let gateway = Sidecar::start_yaml(&self.yaml_with_hops(hops));
        assert!(gateway.gateway.is_some(), "no gateway listener logged");
        gateway
    }
}

/// The `jwt:` section (2-space indent under `gateway:`) with `keys`.
pub fn jwt_yaml(keys: &str, more: &str) -> String {
    format!(
        "  jwt:\n    issuer: {ISSUER}\n    audiences: [{AUDIENCE}]\n    leeway: 60s\n    keys: {keys}\n    roles_claim: roles\n    claim_headers: {{ email: x-user-email }}\n{more}"
    )
}

/// The gateway's plain listener.
pub fn plain(gateway: &Sidecar) -> SocketAddr {
    gateway.gateway.expect("gateway listener")
}

/// The gateway's HTTPS listener.
pub fn tls(gateway: &Sidecar) -> SocketAddr {
    gateway.gateway_tls.expect("gateway-tls listener")
}

/// A request to the gateway, `Host: api.test`.
pub fn request(method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.test")
}

/// `GET path` with `Authorization: Bearer token` when given.
pub fn get_with(path: &str, token: Option<&str>) -> Request<TestBody> {
    let mut b = request("GET", path);
    if let Some(token) = token {
        b = b.header("authorization", format!("Bearer {token}"));
    }
    b.body(empty()).expect("request")
}

/// Sends one request on a new connection to the gateway's plain
/// listener and reads the whole answer.
pub async fn call(gateway: &Sidecar, req: Request<TestBody>) -> Collected {
    collect(super::send_h1(plain(gateway), req).await).await
}

/// Asserts that no log line nor access log line holds `token` or its
/// signature.
#[track_caller]
pub fn assert_not_logged(gateway: &Sidecar, token: &str) {
    let signature = token.rsplit('.').next().unwrap_or(token);
    for line in gateway.logs() {
        assert!(!line.contains(token), "a token in the log: {line}");
        if signature.len() > 8 {
            assert!(
                !line.contains(signature),
                "a token signature in the log: {line}"
            );
        }
    }
}

/// Writes `yaml` over `path` (new file, rename), as editors do.
pub fn rewrite(path: &Path, yaml: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Whole responses, read as JSON where they are.
pub fn json(response: &Collected) -> Value {
    serde_json::from_slice(&response.body).unwrap_or(Value::Null)
}
