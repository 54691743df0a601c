//! The gateway's token keys, from `jwt.keys`: PEM files, secret files and
//! JWKS files read at load (the reloader builds new `Keys` when one
//! changes: [`files`]), and JWKS URLs fetched in the background.
//!
//! A `jwks_url` is fetched by a task on a small runtime of its own (one
//! thread per URL), so loading works the same from any context, sync or
//! async, and start-up waits for the first fetch (at most
//! [`FIRST_FETCH_WAIT`]) without tying up the proxy's workers. Until a
//! fetch succeeds, tokens signed by that URL's keys are refused as
//! `unknown-key`. A failed fetch keeps the keys last fetched and is tried
//! again sooner: from 1 s, doubling up to `jwks_refresh`. The task ends
//! when the last `Keys` holding it is dropped, and a reload of the same
//! URL keeps it (and its keys) rather than fetching again.
//!
//! HTTPS fetches trust the system's roots (`rustls-native-certs`, read
//! once), as a `curl` on the host would.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

use crate::build::BuildError;
use crate::config::{ConfigError, JwtConfig, JwtKeySource};
use crate::jwt::{Expect, Verifier};

/// How long loading waits for a URL's first fetch.
pub const FIRST_FETCH_WAIT: Duration = Duration::from_secs(2);
/// One fetch, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document taken.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// The first retry after a failed fetch; it doubles up to `jwks_refresh`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The keys of one `jwt` config: the files' (read at load) and the URLs'
/// (as last fetched). Cheap to clone.
#[derive(Clone)]
pub struct Keys {
    /// The files' keys, with the config's expectations.
    files: Arc<Verifier>,
    /// One per `jwks_url`, in config order.
    fetchers: Vec<Arc<Fetcher>>,
    /// `files` plus every URL's keys, rebuilt when a URL's change.
    combined: Arc<ArcSwap<Combined>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("file_keys", &self.files.len())
            .field(
                "urls",
                &self.fetchers.iter().map(|f| &f.url).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A verifier and the URL generations it was built from.
struct Combined {
    generations: Vec<u64>,
    verifier: Arc<Verifier>,
}

/// Checks the key files of `config`'s gateway as `Keys::load` will read
/// them (a JWKS URL is fetched at run time, not here), reported as config
/// errors at the key that names the file.
pub fn check_files(config: &crate::config::Config, file: &std::path::Path) -> Vec<ConfigError> {
    let Some(jwt) = config.gateway.as_ref().and_then(|g| g.jwt.as_ref()) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for source in &jwt.keys {
        let mut scratch = Verifier::new(Expect {
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::ZERO,
        });
        let problem = match source.get() {
            JwtKeySource::Pem(path) => std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| scratch.add_pem(&pem, None).map_err(|e| e.to_string())),
            JwtKeySource::SecretFile(path) => std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|secret| {
                    scratch
                        .add_secret(secret.trim_ascii_end(), None)
                        .map_err(|e| e.to_string())
                }),
            JwtKeySource::JwksFile(path) => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| scratch.add_jwks(&text).map(drop).map_err(|e| e.to_string())),
            JwtKeySource::JwksUrl(_) => Ok(()),
        };
        if let (Err(what), Some(path)) = (problem, source.get().file()) {
            errors.push(ConfigError {
                file: file.to_owned(),
                position: source.position(),
                message: format!("gateway.jwt.keys: {}: {what}", path.display()),
            });
        }
    }
    errors
}

/// The files `config` reads keys from, to watch.
pub fn files(config: &JwtConfig) -> Vec<PathBuf> {
    config
        .keys
        .iter()
        .filter_map(|k| k.get().file().cloned())
        .collect()
}

impl Keys {
    /// Reads the key files and starts (or, from `previous`, keeps) the
    /// fetch of each JWKS URL. A file that cannot be read or holds no
    /// usable key is an error naming it.
    pub fn load(config: &JwtConfig, previous: Option<&Keys>) -> Result<Keys, BuildError> {
        let expect = Expect {
            issuer: config.issuer.clone(),
            audience: config.audiences.clone(),
            leeway: config.leeway.0,
        };
        let refresh = config.jwks_refresh.get().0.max(Duration::from_millis(10));
        let mut files = Verifier::new(expect);
        let mut fetchers = Vec::new();
        for source in &config.keys {
            let source = source.get();
            let problem = |path: &PathBuf, e: &dyn std::fmt::Display| {
                BuildError::config(format!("jwt key file {}: {e}", path.display()))
            };
            match source {
                JwtKeySource::Pem(path) => {
                    let pem = std::fs::read(path).map_err(|e| problem(path, &e))?;
                    files.add_pem(&pem, None).map_err(|e| problem(path, &e))?;
                }
                JwtKeySource::SecretFile(path) => {
                    let secret = std::fs::read(path).map_err(|e| problem(path, &e))?;
                    // A trailing newline from an editor or `echo` is not
                    // part of the secret.
                    let secret = secret.trim_ascii_end();
                    files
                        .add_secret(secret, None)
                        .map_err(|e| problem(path, &e))?;
                }
                JwtKeySource::JwksFile(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| problem(path, &e))?;
                    files.add_jwks(&text).map_err(|e| problem(path, &e))?;
                }
                JwtKeySource::JwksUrl(url) => {
                    let reused = previous
                        .into_iter()
                        .flat_map(|p| &p.fetchers)
                        .find(|f| f.url == *url && f.refresh == refresh)
                        .cloned();
                    let fetcher = match reused {
                        Some(fetcher) => fetcher,
                        // Start-up waits for the first fetch; a reload
                        // never holds the proxy's thread for it.
                        None => Fetcher::start(url, refresh, previous.is_none())?,
                    };
                    fetchers.push(fetcher);
                }
            }
        }
        let files = Arc::new(files);
        let combined = combine(&files, &fetchers);
        Ok(Keys {
            files,
            fetchers,
            combined: Arc::new(ArcSwap::from_pointee(combined)),
        })
    }

    /// The keys in force: the files' and each URL's as last fetched.
    pub fn verifier(&self) -> Arc<Verifier> {
        let current = self.combined.load();
        let fresh = current
            .generations
            .iter()
            .zip(&self.fetchers)
            .all(|(seen, f)| *seen == f.shared.generation.load(Ordering::Acquire));
        if fresh {
            return current.verifier.clone();
        }
        // A URL's keys changed: rebuild once (a race rebuilds twice,
        // harmlessly).
        let combined = combine(&self.files, &self.fetchers);
        let verifier = combined.verifier.clone();
        self.combined.store(Arc::new(combined));
        verifier
    }
}

/// The files' keys plus every URL's.
fn combine(files: &Arc<Verifier>, fetchers: &[Arc<Fetcher>]) -> Combined {
    if fetchers.is_empty() {
        return Combined {
            generations: Vec::new(),
            verifier: files.clone(),
        };
    }
    let mut verifier = Verifier::clone(files);
    let mut generations = Vec::with_capacity(fetchers.len());
    for fetcher in fetchers {
        // The generation before the keys: a change in between is seen
        // next time.
        generations.push(fetcher.shared.generation.load(Ordering::Acquire));
        if let Some(keys) = fetcher.shared.keys.load().as_ref() {
            verifier.extend(keys);
        }
    }
    Combined {
        generations,
        verifier: Arc::new(verifier),
    }
}

/// What a URL's task shares with the `Keys` holding it.
#[derive(Default)]
struct Shared {
    /// The keys last fetched; `None` before the first success.
    keys: ArcSwap<Option<Verifier>>,
    /// Bumped after each change of `keys`.
    generation: AtomicU64,
}

/// The background fetch of one `jwks_url`; dropping the last one stops it.
struct Fetcher {
    url: String,
    refresh: Duration,
    shared: Arc<Shared>,
    /// Dropped, it tells the task to end.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fetcher {
    /// Starts the task and, if `wait`, waits for its first fetch, up to
    /// [`FIRST_FETCH_WAIT`].
    fn start(url: &str, refresh: Duration, wait: bool) -> Result<Arc<Fetcher>, BuildError> {
        let target = Target::parse(url)
            .map_err(|e| BuildError::config(format!("jwks_url {}: {e}", redacted(url))))?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (first_tx, first_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BuildError::config(format!("jwks_url fetch runtime: {e}")))?;
        let task_shared = shared.clone();
        std::thread::Builder::new()
            .name("pilotfish-jwks".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        () = run(target, refresh, task_shared, first_tx) => {}
                    }
                });
            })
            .map_err(|e| BuildError::config(format!("jwks_url fetch thread: {e}")))?;
        if wait {
            // Timed out or failed: the task goes on; tokens wait for its keys.
            let _ = first_rx.recv_timeout(FIRST_FETCH_WAIT);
        }
        Ok(Arc::new(Fetcher {
            url: url.to_owned(),
            refresh,
            shared,
            _stop: stop,
        }))
    }
}

/// Fetches `target` every `refresh`, sooner after a failure.
async fn run(
    target: Target,
    refresh: Duration,
    shared: Arc<Shared>,
    first: std::sync::mpsc::SyncSender<()>,
) {
    let mut first = Some(first);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let wait = match fetch_keys(&target).await {
            Ok(keys) => {
                debug!(url = %target, keys = keys.len(), "JWKS fetched");
                shared.keys.store(Arc::new(Some(keys)));
                shared.generation.fetch_add(1, Ordering::AcqRel);
                backoff = FIRST_BACKOFF;
                refresh
            }
            Err(e) => {
                warn!(url = %target, "cannot fetch the JWKS (the keys last fetched stay): {e}");
                let wait = backoff.min(refresh);
                backoff = backoff.saturating_mul(2);
                wait
            }
        };
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        tokio::time::sleep(wait).await;
    }
}

/// One fetch, parsed.
async fn fetch_keys(target: &Target) -> Result<Verifier, String> {
    let body = tokio::time::timeout(FETCH_TIMEOUT, fetch(target))
        .await
        .map_err(|_| format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))??;
    let text = std::str::from_utf8(&body).map_err(|_| "the document is not UTF-8".to_owned())?;
    let mut keys = Verifier::new(Expect::default());
    keys.add_jwks(text).map_err(|e| e.to_string())?;
    Ok(keys)
}

/// A `jwks_url`, parsed.
struct Target {
    https: bool,
    host: String,
    port: u16,
    uri: Uri,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Without userinfo or query: either may hold a credential.
        let scheme = if self.https { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}:{}{}",
            self.host,
            self.port,
            self.uri.path()
        )
    }
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("the scheme must be http or https".into()),
        };
        let authority = uri.authority().ok_or("the URL has no host")?;
        if authority.as_str().contains('@') {
            return Err("user:password@ in the URL is not supported".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Target {
            https,
            host,
            port,
            uri,
        })
    }
}

/// A URL for a message: the part before any `?`, without userinfo.
fn redacted(url: &str) -> String {
    let url = url.split('?').next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// GET over HTTP/1.1, on a fresh connection; the body of a 200, at most
/// [`MAX_DOCUMENT`] bytes.
async fn fetch(target: &Target) -> Result<Bytes, String> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if target.https {
        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("host name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(client_tls()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        get(TokioIo::new(tls), target).await
    } else {
        get(TokioIo::new(tcp), target).await
    }
}

async fn get<I>(io: I, target: &Target) -> Result<Bytes, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let connection = tokio::spawn(connection);
    let authority = target
        .uri
        .authority()
        .map_or(target.host.as_str(), |a| a.as_str());
    let path = target.uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(http::header::HOST, authority)
        .header(
            http::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .header(
            http::header::USER_AGENT,
            concat!("pilotfish/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let result = if response.status() == StatusCode::OK {
        Limited::new(response.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => format!("the document is larger than {} KiB", MAX_DOCUMENT / 1024),
                Err(e) => format!("reading the document: {e}"),
            })
    } else {
        Err(format!("HTTP status {}", response.status()))
    };
    connection.abort();
    result
}

/// rustls with the system's roots, built once.
fn client_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                debug!("system root certificates: {e}");
            }
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system root certificates (install ca-certificates)".into());
            }
            let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{HumanDuration, Located};
    use crate::jwt::Rejection;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
    use serde_json::json;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub(crate) fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    pub(crate) fn config(keys: Vec<JwtKeySource>) -> JwtConfig {
        JwtConfig {
            issuer: Some("https://pilotfish.demo".into()),
            audiences: vec!["demo".into()],
            leeway: HumanDuration(Duration::from_secs(60)),
            keys: keys.into_iter().map(Located::new).collect(),
            jwks_refresh: Located::new(HumanDuration(Duration::from_millis(200))),
            roles_claim: "roles".into(),
            scopes_claim: "scope".into(),
            claim_headers: Default::default(),
            query_param: None,
        }
    }

    pub(crate) struct Signer {
        key: EncodingKey,
        alg: Algorithm,
        pub public_pem: String,
        pub jwk: serde_json::Value,
    }

    impl Signer {
        pub(crate) fn ed25519() -> Signer {
            Self::new(&PKCS_ED25519, Algorithm::EdDSA)
        }

        pub(crate) fn es256() -> Signer {
            Self::new(&PKCS_ECDSA_P256_SHA256, Algorithm::ES256)
        }

        fn new(alg: &'static rcgen::SignatureAlgorithm, jwt_alg: Algorithm) -> Signer {
            let pair = KeyPair::generate_for(alg).expect("key");
            let pem = pair.serialize_pem();
            let key = match jwt_alg {
                Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
                _ => EncodingKey::from_ec_pem(pem.as_bytes()),
            }
            .expect("encoding key");
            let jwk = match jwt_alg {
                // jsonwebtoken has no Ed25519 JWK export.
                Algorithm::EdDSA => crate::certs::ed25519_jwk(pair.public_key_raw(), "unset"),
                _ => serde_json::to_value(
                    jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jwt_alg).expect("jwk"),
                )
                .expect("json"),
            };
            Signer {
                key,
                alg: jwt_alg,
                public_pem: pair.public_key_pem(),
                jwk,
            }
        }

        pub(crate) fn jwks(&self, kid: &str) -> String {
            let mut jwk = self.jwk.clone();
            jwk["kid"] = json!(kid);
            json!({ "keys": [jwk] }).to_string()
        }

        pub(crate) fn sign(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
            let mut header = Header::new(self.alg);
            header.kid = kid.map(str::to_owned);
            encode(&header, claims, &self.key).expect("sign")
        }

        pub(crate) fn token(&self, kid: Option<&str>) -> String {
            self.sign(
                kid,
                &json!({"sub": "alice", "iss": "https://pilotfish.demo", "aud": "demo",
                        "exp": now() + 600, "roles": ["admin"]}),
            )
        }
    }

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    #[test]
    fn pem_secret_and_jwks_files_combine_into_one_verifier() {
        let dir = tempfile::tempdir().expect("dir");
        let pem_signer = Signer::ed25519();
        let jwks_signer = Signer::es256();
        let secret = "s".repeat(40);
        let config = config(vec![
            JwtKeySource::Pem(write(&dir, "jwt.pub", &pem_signer.public_pem)),
            JwtKeySource::SecretFile(write(&dir, "secret", &format!("{secret}\n"))),
            JwtKeySource::JwksFile(write(&dir, "jwks.json", &jwks_signer.jwks("k1"))),
        ]);
        assert_eq!(files(&config).len(), 3);
        let keys = Keys::load(&config, None).expect("keys");
        let v = keys.verifier();
        // The PEM key has no kid: it answers tokens with or without one.
        assert!(v.verify(&pem_signer.token(None)).is_ok());
        assert!(v.verify(&pem_signer.token(Some("other"))).is_ok());
        assert!(v.verify(&jwks_signer.token(Some("k1"))).is_ok());
        // The JWKS key only by its kid.
        assert_eq!(
            v.verify(&jwks_signer.token(Some("k2"))),
            Err(Rejection::UnknownKey)
        );
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &json!({"iss": "https://pilotfish.demo", "aud": "demo", "exp": now() + 60}),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("hs256");
        assert!(v.verify(&hs).is_ok());
        // Another Ed25519 key's token, without kid: bad signature.
        assert_eq!(
            v.verify(&Signer::ed25519().token(None)),
            Err(Rejection::Signature)
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_or_parsed_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("nope.pub");
        let err = Keys::load(&config(vec![JwtKeySource::Pem(missing.clone())]), None)
            .expect_err("missing");
        assert!(err.to_string().contains("nope.pub"), "{err}");
        let bad = write(&dir, "bad.json", "{not json");
        let err = Keys::load(&config(vec![JwtKeySource::JwksFile(bad)]), None).expect_err("bad");
        assert!(
            err.to_string().contains("bad.json") && err.to_string().contains("JWKS"),
            "{err}"
        );
        let short = write(&dir, "short", "tiny");
        let err =
            Keys::load(&config(vec![JwtKeySource::SecretFile(short)]), None).expect_err("short");
        assert!(err.to_string().contains("short"), "{err}");
    }

    /// A JWKS server: answers each GET with `body` (or 500 when `None`),
    /// counting requests.
    struct Server {
        url: String,
        body: Arc<Mutex<Option<String>>>,
        hits: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(body: Option<String>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let (b, h) = (b.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = b.lock().expect("lock").clone();
                    let response = match body {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                    };
                    let _ = tcp.write_all(response.as_bytes()).await;
                });
            }
        });
        Server {
            url,
            body,
            hits,
            task,
        }
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not within 5s: {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jwks_url_is_fetched_refreshed_and_kept_on_failure() {
        let first = Signer::es256();
        let second = Signer::ed25519();
        let server = serve(Some(first.jwks("one"))).await;
        let config = config(vec![JwtKeySource::JwksUrl(server.url.clone())]);
        let keys = tokio::task::spawn_blocking(move || Keys::load(&config, None))
            .await
            .expect("join")
            .expect("keys");
        // Fetched at load.
        assert!(keys.verifier().verify(&first.token(Some("one"))).is_ok());
        assert_eq!(
            keys.verifier().verify(&second.token(Some("two"))),
            Err(Rejection::UnknownKey)
        );
        // Changed at the server: refreshed.
        *server.body.lock().expect("lock") = Some(second.jwks("two"));
        eventually("the new key", || {
            keys.verifier().verify(&second.token(Some("two"))).is_ok()
        })
        .await;
        assert_eq!(
            keys.verifier().verify(&first.token(Some("one"))),
            Err(Rejection::UnknownKey)
        );
        // Failing: the keys stay.
        *server.body.lock().expect("lock") = None;
        let hits = server.hits.load(Ordering::SeqCst);
        eventually("two failed fetches", || {
            server.hits.load(Ordering::SeqCst) >= hits + 2
        })
        .await;
        assert!(keys.verifier().verify(&second.token(Some("two"))).is_ok());
        // Invalid JSON is a failure too.
        *server.body.lock().expect("lock") = Some("{\"keys\": 7}".into());
        let hits = server.hits.load(Ordering::SeqCst);
        eventually("a bad document", || {
            server.hits.load(Ordering::SeqCst) > hits
        })
        .await;
        assert!(keys.verifier().verify(&second.token(Some("two"))).is_ok());
        // Over the size limit too.
        let huge = format!(
            "{{\"keys\": [], \"pad\": \"{}\"}}",
            "x".repeat(MAX_DOCUMENT)
        );
        *server.body.lock().expect("lock") = Some(huge);
        let hits = server.hits.load(Ordering::SeqCst);
        eventually("a huge document", || {
            server.hits.load(Ordering::SeqCst) > hits
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(keys.verifier().verify(&second.token(Some("two"))).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_keeps_the_fetch_and_dropping_the_keys_stops_it() {
        let signer = Signer::es256();
        let server = serve(Some(signer.jwks("k"))).await;
        let config = config(vec![JwtKeySource::JwksUrl(server.url.clone())]);
        let c = config.clone();
        let keys = tokio::task::spawn_blocking(move || Keys::load(&c, None))
            .await
            .expect("join")
            .expect("keys");
        let hits = server.hits.load(Ordering::SeqCst);
        let again = Keys::load(&config, Some(&keys)).expect("reload");
        assert!(Arc::ptr_eq(&again.fetchers[0], &keys.fetchers[0]));
        // No fetch of its own: it has the keys already.
        assert!(again.verifier().verify(&signer.token(Some("k"))).is_ok());
        assert!(server.hits.load(Ordering::SeqCst) <= hits + 1);
        drop(keys);
        eventually("still fetching", || {
            server.hits.load(Ordering::SeqCst) > hits + 1
        })
        .await;
        drop(again);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = server.hits.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            stopped,
            "fetching after drop"
        );
    }

    #[test]
    fn an_unreachable_url_does_not_hold_start_up_and_its_tokens_are_unknown() {
        // A port nothing listens on: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let config = config(vec![JwtKeySource::JwksUrl(format!(
            "http://127.0.0.1:{port}/jwks"
        ))]);
        let start = std::time::Instant::now();
        let keys = Keys::load(&config, None).expect("keys");
        assert!(start.elapsed() < FIRST_FETCH_WAIT + Duration::from_millis(500));
        assert_eq!(
            keys.verifier().verify(&Signer::es256().token(Some("k"))),
            Err(Rejection::UnknownKey)
        );
        // A URL that cannot be one is a config error.
        let err = Keys::load(
            &self::config(vec![JwtKeySource::JwksUrl("ftp://x/y?secret=1".into())]),
            None,
        )
        .expect_err("ftp");
        assert!(err.to_string().contains("http or https") && !err.to_string().contains("secret"));
    }

    #[test]
    fn urls_in_messages_lose_userinfo_and_query() {
        assert_eq!(redacted("https://u:p@idp/jwks?k=1"), "https://idp/jwks");
        let target = Target::parse("https://idp.example:8443/jwks?x=1").expect("url");
        assert_eq!(target.to_string(), "https://idp.example:8443/jwks");
        assert!(Target::parse("https://u:p@idp/jwks").is_err());
    }
}
