//! What the gateway reads from outside its config and keeps current: the
//! HTTPS certificate (its files swapped), and keys from a JWKS URL
//! (fetched, refreshed, kept while the URL fails).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::gateway::*;
use crate::support::inspect::serial_of_file;
use crate::support::*;

/// Polls `probe` every 200 ms until it holds, for at most `patience`.
async fn eventually<F, Fut>(patience: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < patience {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_https_certificate_is_served_after_its_files_change_and_a_bad_one_is_refused() {
    let certs = Certs::new();
    let orders = MeshService::start(&certs, "orders").await;
    let first = ServerCert::new();
    let gateway = GatewaySetup::new(&certs)
        .mesh("orders", &[orders.endpoint()])
        .gateway(&first.yaml())
        .gateway("  routes:\n    - { path_prefix: /, service: orders }\n")
        .start();
    let addr = gateway.gateway_tls.expect("gateway-tls listener");
    // A client that trusts both CAs, so it sees whichever is served.
    let second = ServerCert::new();
    let both = first.dir.path().join("both-cas.pem");
    let cas = [read_text(&first.ca()), read_text(&second.ca())].concat();
    std::fs::write(&both, cas).expect("write CAs");
    let client = || {
        let mut config = tls_config(&both, None, false);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    };
    let serial = || async { served_serial_of(addr, client()).await };
    assert_eq!(serial().await, serial_of_file(&first.cert()));

    // The second certificate put in place the way a deploy does: the key,
    // then the certificate, each renamed over the old file.
    swap(&second.key(), &first.key());
    swap(&second.cert(), &first.cert());
    let new = serial_of_file(&first.cert());
    let rotated = eventually(Duration::from_secs(15), || async { serial().await == new }).await;
    assert!(rotated, "the new certificate was not served within 15 s");

    // A broken certificate file is refused; the one in force stays.
    std::fs::write(first.dir.path().join("junk.pem"), "not a certificate\n").expect("junk");
    swap(&first.dir.path().join("junk.pem"), &first.cert());
    gateway.wait_for_log(
        "gateway certificate or token keys refused",
        Duration::from_secs(15),
    );
    assert_eq!(serial().await, new, "the certificate in force stays");
}

fn read_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).expect("read")
}

/// Copies `from` over `to` through a new file and a rename.
fn swap(from: &std::path::Path, to: &std::path::Path) {
    let tmp = to.with_extension("swap");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

/// The serial `addr` presents to `config` for `localhost`.
async fn served_serial_of(addr: SocketAddr, config: rustls::ClientConfig) -> String {
    let stream = tls_connect(addr, config, "localhost")
        .await
        .expect("TLS handshake");
    let certs = stream.get_ref().1.peer_certificates().expect("certificate");
    crate::support::inspect::serial_of_der(certs[0].as_ref())
}

/// A JWKS endpoint whose document (or failure) the test sets.
struct JwksServer {
    addr: SocketAddr,
    document: Arc<Mutex<Option<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(document: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let document = Arc::new(Mutex::new(Some(document)));
        let shared = document.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let answer = shared.lock().expect("document").clone();
                        async move {
                            let response = match answer {
                                Some(doc) => Response::new(Full::new(Bytes::from(doc.to_string()))),
                                None => {
                                    let mut r =
                                        Response::new(Full::new(Bytes::from_static(b"down")));
                                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                    r
                                }
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            document,
            task,
        }
    }

    /// Serves `document` from now on; `None`: 500.
    fn set(&self, document: Option<Value>) {
        *self.document.lock().expect("document") = document;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_from_a_jwks_url_are_fetched_refreshed_and_kept_while_it_fails() {
    let certs = Certs::new();
    let keys = TokenKeys::new();
    let orders = MeshService::start(&certs, "orders").await;
    let server = JwksServer::start(json!({ "keys": [keys.jwk("k1")] })).await;
    let url = format!("http://{}/.well-known/jwks.json", server.addr);
    let gateway = GatewaySetup::new(&certs)
        .mesh("orders", &[orders.endpoint()])
        .gateway(&jwt_yaml(
            &format!("[{{ jwks_url: \"{url}\" }}]"),
            "    jwks_refresh: 1s\n",
        ))
        .gateway("  routes:\n    - { path_prefix: /, service: orders }\n")
        .start();
    let alice = claims("alice", &["user"]);
    let k1 = keys.es256(&alice);
    let k2 = sign(Algorithm::ES256, Some("k2"), &keys.ec2, &alice);
    let status = |token: String| {
        let gateway = &gateway;
        async move {
            call(gateway, get_with("/orders/1", Some(&token)))
                .await
                .status
        }
    };
    // Fetched at start-up.
    assert_eq!(status(k1.clone()).await, 200);
    assert_eq!(status(k2.clone()).await, 401, "k2 is not published yet");

    // Rotated at the URL: k2 in, k1 out, within a few refreshes.
    server.set(Some(json!({ "keys": [keys.jwk("k2")] })));
    let rotated = eventually(Duration::from_secs(15), || async {
        status(k2.clone()).await == 200 && status(k1.clone()).await == 401
    })
    .await;
    assert!(rotated, "the URL's new keys were not in force within 15 s");

    // The URL fails: the keys last fetched stay in force.
    server.set(None);
    gateway.wait_for_log(&server.addr.to_string(), Duration::from_secs(15));
    assert_eq!(status(k2.clone()).await, 200, "last good keys kept");
    let refused = call(&gateway, get_with("/orders/1", Some(&k1))).await;
    assert_eq!(refused.status, 401);
    let challenge = refused.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("unknown-key"), "{challenge}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_jwks_file_is_refused_and_the_keys_in_force_stay() {
    let certs = Certs::new();
    let keys = TokenKeys::new();
    let orders = MeshService::start(&certs, "orders").await;
    let gateway = GatewaySetup::new(&certs)
        .mesh("orders", &[orders.endpoint()])
        .gateway(&jwt_yaml(&keys.pem_and_jwks(), ""))
        .gateway("  routes:\n    - { path_prefix: /, service: orders }\n")
        .start();
    let token = keys.es256(&claims("alice", &["user"]));
    assert_eq!(
        call(&gateway, get_with("/x", Some(&token))).await.status,
        200
    );

    // A deploy writes something that is not a JWKS.
    let broken = keys.dir.path().join("broken.json");
    std::fs::write(&broken, "{ not json").expect("write");
    std::fs::rename(&broken, keys.jwks_path()).expect("rename");
    let refused = gateway.wait_for_log(
        "gateway certificate or token keys refused",
        Duration::from_secs(15),
    );
    assert!(refused.contains("jwks"), "{refused}");
    // The keys in force stay: the token its key signed still passes.
    assert_eq!(
        call(&gateway, get_with("/x", Some(&token))).await.status,
        200
    );
}
