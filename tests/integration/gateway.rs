//! The edge gateway: tokens checked at the edge (each way a token can be
//! bad gets its own 401), identity fields the app can trust, the client
//! address behind proxies, HTTPS with HTTP/1.1 and HTTP/2, and the
//! hardening of a listener facing the internet. Routing, splits and
//! filters are in `gateway_routes.rs`.

use std::time::{Duration, Instant};

use http::Request;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::support::gateway::*;
use crate::support::*;

/// The routes of the auth tests: one public, one needing a token, one
/// needing the `admin` role, all to `orders`.
const ROUTES: &str = "  routes:
    - { name: public, path_prefix: /public, service: orders, auth: public }
    - { name: orders, path_prefix: /orders, service: orders }
    - { name: admin, path_prefix: /admin, service: orders, auth: { roles: [admin] } }
";

/// A gateway verifying tokens with `keys`, in front of `orders` (an echo
/// app behind its sidecar).
struct Edge {
    keys: TokenKeys,
    orders: MeshService,
    gateway: Sidecar,
    _certs: Certs,
}

impl Edge {
    async fn start(keys_yaml: impl Fn(&TokenKeys) -> String, jwt_more: &str) -> Self {
        let certs = Certs::new();
        let keys = TokenKeys::new();
        let orders = MeshService::start(&certs, "orders").await;
        let gateway = GatewaySetup::new(&certs)
            .mesh("orders", &[orders.endpoint()])
            .gateway(&jwt_yaml(&keys_yaml(&keys), jwt_more))
            .gateway(ROUTES)
            .start();
        Self {
            keys,
            orders,
            gateway,
            _certs: certs,
        }
    }

    /// PEM and JWKS keys, tokens only in `Authorization`.
    async fn standard() -> Self {
        Self::start(TokenKeys::pem_and_jwks, "").await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Collected {
        call(&self.gateway, get_with(path, token)).await
    }
}

/// The identity fields the gateway owns, as a client might forge them.
fn forged(path: &str, token: Option<&str>) -> Request<TestBody> {
    let mut b = request("GET", path)
        .header("x-user-id", "mallory")
        .header("x_user_id", "mallory")
        .header("x-user-roles", "admin")
        .header("x-user-email", "mallory@evil.test");
    if let Some(token) = token {
        b = b.header("authorization", format!("Bearer {token}"));
    }
    b.body(empty()).expect("request")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_of_each_kind_reaches_the_app_with_the_identity_it_proves() {
    let edge = Edge::standard().await;
    let alice = claims("alice", &["admin", "reader"]);
    for (kind, token) in [
        ("RS256", edge.keys.rs256(&alice)),
        ("ES256", edge.keys.es256(&alice)),
        ("EdDSA", edge.keys.eddsa(&alice)),
    ] {
        let response = call(&edge.gateway, forged("/orders/42", Some(&token))).await;
        assert_eq!(response.status, 200, "{kind}: {}", response.text());
        let got = edge.orders.app.last();
        assert_eq!(got.path, "/orders/42", "{kind}");
        assert_eq!(got.all("x-user-id"), ["alice"], "{kind}: forged id kept");
        assert!(got.all("x_user_id").is_empty(), "{kind}: {:?}", got.headers);
        let roles = got.all("x-user-roles");
        assert_eq!(roles.len(), 1, "{kind}: {roles:?}");
        assert!(
            roles[0].contains("admin") && roles[0].contains("reader"),
            "{kind}: {roles:?}"
        );
        assert_eq!(got.all("x-user-email"), ["alice@example.test"], "{kind}");
        assert_not_logged(&edge.gateway, &token);
    }
    // The admin route lets her in too.
    let token = edge.keys.es256(&alice);
    let response = edge.get("/admin/users", Some(&token)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(edge.orders.app.last().all("x-user-id"), ["alice"]);
    assert_not_logged(&edge.gateway, &token);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_identity_fields_are_removed_on_public_routes_too() {
    let edge = Edge::standard().await;
    let response = call(&edge.gateway, forged("/public/catalog", None)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let got = edge.orders.app.last();
    assert_eq!(got.path, "/public/catalog");
    for name in ["x-user-id", "x_user_id", "x-user-roles", "x-user-email"] {
        assert!(got.all(name).is_empty(), "{name} reached the app: {got:?}");
    }
    // Without a token, the protected route is refused before the app, with
    // the bare challenge (RFC 6750 3.1: no error for a missing token).
    let before = edge.orders.app.count();
    let response = call(&edge.gateway, forged("/orders/1", None)).await;
    assert_eq!(response.status, 401, "{}", response.text());
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("realm=\"pilotfish\""),
        "{challenge:?}"
    );
    assert!(!challenge.contains("error="), "{challenge:?}");
    assert_eq!(edge.orders.app.count(), before, "the app was called");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hs256_token_is_checked_with_the_shared_secret() {
    let edge = Edge::start(TokenKeys::secret_only, "").await;
    let token = edge.keys.hs256(&claims("bob", &["reader"]));
    let response = edge.get("/orders/7", Some(&token)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let got = edge.orders.app.last();
    assert_eq!(got.all("x-user-id"), ["bob"]);
    assert!(got.all("x-user-roles")[0].contains("reader"), "{got:?}");
    // An RS256 token means nothing to a gateway holding only a secret.
    let rsa = edge.keys.rs256(&claims("bob", &["reader"]));
    let response = edge.get("/orders/7", Some(&rsa)).await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert!(
        response
            .header("www-authenticate")
            .is_some_and(|c| c.contains("invalid_token")),
        "{:?}",
        response.headers
    );
    assert_not_logged(&edge.gateway, &token);
    assert_not_logged(&edge.gateway, &rsa);
}

/// Reasons in `error_description` (src/jwt.rs, src/gateway/auth.rs).
const EXPIRED: &[&str] = &["expired"];
const NOT_YET: &[&str] = &["not-yet-valid"];
const ISSUER_: &[&str] = &["wrong-issuer"];
const AUDIENCE_: &[&str] = &["wrong-audience"];
const SIGNATURE: &[&str] = &["bad-signature"];
const ALGORITHM: &[&str] = &["algorithm-not-allowed"];
const UNKNOWN_KEY: &[&str] = &["unknown-key"];
const MALFORMED: &[&str] = &["malformed"];
const IN_QUERY: &[&str] = &["token-in-query"];

#[track_caller]
fn assert_refused(response: &Collected, case: &str, reasons: &[&str]) {
    assert_eq!(response.status, 401, "{case}: {}", response.text());
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("realm=\"pilotfish\""),
        "{case}: {challenge:?}"
    );
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{case}: {challenge:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| challenge.contains(&format!("error_description=\"{r}\""))),
        "{case}: {challenge:?} names none of {reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_token_gets_401_with_its_own_reason_and_never_reaches_the_app() {
    let edge = Edge::standard().await;
    let keys = &edge.keys;
    let good = claims("alice", &["admin"]);
    let t = now();
    let valid = keys.es256(&good);
    // The payload of another (admin) token under the first one's
    // signature.
    let tampered = {
        let other = keys.es256(&with(good.clone(), json!({ "sub": "root" })));
        let parts: Vec<&str> = valid.split('.').collect();
        let payload = other.split('.').nth(1).expect("payload");
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let unsigned = {
        // {"alg":"none","typ":"JWT"}, a real payload, no signature.
        let payload = valid.split('.').nth(1).expect("payload");
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    // HS256 "signed" with the RSA public key's PEM text as the secret:
    // the PEM key allows RSA algorithms only.
    let confused = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(keys.rsa_public_pem.as_bytes()),
        &good,
    );
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "expired an hour ago",
            keys.es256(&with(
                good.clone(),
                json!({ "iat": t - 7200, "exp": t - 3600 }),
            )),
            EXPIRED,
        ),
        (
            "valid in an hour",
            keys.rs256(&with(good.clone(), json!({ "nbf": t + 3600 }))),
            NOT_YET,
        ),
        (
            "another issuer",
            keys.es256(&with(good.clone(), json!({ "iss": "https://evil.test" }))),
            ISSUER_,
        ),
        (
            "another audience",
            keys.eddsa(&with(good.clone(), json!({ "aud": "other" }))),
            AUDIENCE_,
        ),
        ("tampered payload", tampered, SIGNATURE),
        (
            "signed by a key of the right kid but another key",
            sign(Algorithm::ES256, Some(EC_KID), &keys.ec2, &good),
            SIGNATURE,
        ),
        (
            "alg none",
            unsigned,
            &["algorithm-not-allowed", "malformed"],
        ),
        ("HS256 with the RSA public key", confused, ALGORITHM),
        (
            "unknown kid",
            sign(Algorithm::ES256, Some("k9"), &keys.ec, &good),
            UNKNOWN_KEY,
        ),
        ("not a JWT", "not-a-jwt".to_owned(), MALFORMED),
        ("three parts of nothing", "a.b.c".to_owned(), MALFORMED),
    ];
    for (case, token, reasons) in &cases {
        let response = edge.get("/orders/1", Some(token)).await;
        assert_refused(&response, case, reasons);
        // Refused alike where a role is needed.
        let response = edge.get("/admin/1", Some(token)).await;
        assert_refused(&response, case, reasons);
    }
    assert_eq!(edge.orders.app.count(), 0, "a bad token reached the app");
    // The good one passes, so the refusals were the tokens' fault.
    let response = edge.get("/orders/1", Some(&valid)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    for (_, token, _) in &cases {
        if token.len() > 20 {
            assert_not_logged(&edge.gateway, token);
        }
    }
    assert_not_logged(&edge.gateway, &valid);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_in_the_query_string_is_refused_unless_allowed_and_never_logged() {
    let edge = Edge::standard().await;
    let token = edge.keys.es256(&claims("alice", &[]));
    let response = edge
        .get(&format!("/orders/1?access_token={token}"), None)
        .await;
    assert_refused(&response, "token in the query", IN_QUERY);
    assert_eq!(edge.orders.app.count(), 0);
    assert_not_logged(&edge.gateway, &token);

    // Where the config allows it (browsers' WebSockets), it is accepted,
    // and still not logged, not even in the access log's path.
    let edge = Edge::start(TokenKeys::pem_and_jwks, "    query_param: access_token\n").await;
    let token = edge.keys.es256(&claims("alice", &[]));
    let response = edge
        .get(&format!("/orders/1?access_token={token}&page=2"), None)
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let got = edge.orders.app.last();
    assert_eq!(got.all("x-user-id"), ["alice"]);
    // The token goes no further than the gateway; the rest of the query does.
    let query = got.query.clone().unwrap_or_default();
    assert!(!query.contains(&token), "the app got the token: {query}");
    assert!(query.contains("page=2"), "{query}");
    // Nor past a public route, which does not look at it.
    let response = edge
        .get(&format!("/public/x?access_token={token}"), None)
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let query = edge.orders.app.last().query.unwrap_or_default();
    assert!(!query.contains(&token), "the app got the token: {query}");
    edge.gateway.wait_access_log(2, Duration::from_secs(5));
    assert_not_logged(&edge.gateway, &token);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_the_route_s_role_gets_403_insufficient_scope() {
    let edge = Edge::standard().await;
    let reader = edge.keys.rs256(&claims("carol", &["reader"]));
    let response = edge.get("/admin/settings", Some(&reader)).await;
    assert_eq!(response.status, 403, "{}", response.text());
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"pilotfish\"")
            && challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("admin"),
        "{challenge:?}"
    );
    assert_eq!(edge.orders.app.count(), 0);
    // The same token is good where no role is needed.
    let response = edge.get("/orders/1", Some(&reader)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    // No token at all on the admin route: 401, not 403.
    let response = edge.get("/admin/settings", None).await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert_not_logged(&edge.gateway, &reader);
}

/// Polls `check` until it holds, up to 15 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 15s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_added_to_the_jwks_file_is_accepted_and_a_removed_one_refused_without_restart() {
    let edge = Edge::start(
        |keys| format!("[{{ jwks_file: {} }}]", path_str(&keys.jwks_path())),
        "",
    )
    .await;
    let keys = &edge.keys;
    let pid = edge.gateway.pid();
    let old = keys.es256(&claims("alice", &[]));
    let new = sign(
        Algorithm::ES256,
        Some(EC2_KID),
        &keys.ec2,
        &claims("alice", &[]),
    );
    assert_eq!(edge.get("/orders/1", Some(&old)).await.status, 200);
    assert_refused(
        &edge.get("/orders/1", Some(&new)).await,
        "k2 before",
        UNKNOWN_KEY,
    );

    // Rotation, step 1: the new key is published beside the old.
    keys.write_jwks(&[keys.jwk(EC_KID), keys.jwk(ED_KID), keys.jwk(EC2_KID)]);
    eventually("the new key accepted", async || {
        edge.get("/orders/1", Some(&new)).await.status == 200
    })
    .await;
    assert_eq!(edge.get("/orders/1", Some(&old)).await.status, 200);

    // Step 2: the old key is withdrawn.
    keys.write_jwks(&[keys.jwk(EC2_KID)]);
    eventually("the old key refused", async || {
        edge.get("/orders/1", Some(&old)).await.status == 401
    })
    .await;
    assert_refused(
        &edge.get("/orders/1", Some(&old)).await,
        "k1 after",
        UNKNOWN_KEY,
    );
    assert_eq!(edge.get("/orders/1", Some(&new)).await.status, 200);
    assert_eq!(edge.gateway.pid(), pid);
    let readies = edge
        .gateway
        .logs()
        .iter()
        .filter(|l| l.contains("\"message\":\"ready\""))
        .count();
    assert_eq!(readies, 1, "the gateway restarted");
    assert_not_logged(&edge.gateway, &new);
    assert_not_logged(&edge.gateway, &old);
}

/// A gateway with both listeners and public routes to `orders`.
async fn open_gateway(certs: &Certs, orders: &MeshService, server: &ServerCert) -> Sidecar {
    GatewaySetup::new(certs)
        .mesh("orders", &[orders.endpoint()])
        .gateway(&server.yaml())
        .gateway("  routes:\n    - { path_prefix: /, service: orders }\n")
        .start()
}

#[tokio::test(flavor = "multi_thread")]
async fn x_forwarded_for_is_appended_and_proto_set_and_a_client_s_own_entry_is_not_believed() {
    let certs = Certs::new();
    let orders = MeshService::start(&certs, "orders").await;
    let server = ServerCert::new();
    let gateway = open_gateway(&certs, &orders, &server).await;

    let req = request("GET", "/whoami")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .body(empty())
        .expect("request");
    let response = call(&gateway, req).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let got = orders.app.last();
    let xff = got.all("x-forwarded-for").join(", ");
    let entries: Vec<&str> = xff.split(',').map(str::trim).collect();
    assert_eq!(
        entries.last(),
        Some(&"127.0.0.1"),
        "the peer's address is appended: {xff:?}"
    );
    assert_eq!(got.all("x-forwarded-proto"), ["http"], "{got:?}");

    // With no trusted hop the client's own entry is not its address: the
    // access log names the peer.
    let lines = gateway.wait_access_log(1, Duration::from_secs(5));
    let line = lines.last().expect("a line");
    let values: Vec<String> = line
        .as_object()
        .expect("object")
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        !values.iter().any(|v| v == "203.0.113.9"),
        "a forged address taken as the client's: {line}"
    );

    // Over HTTPS the proto is https.
    let stream = tls_connect(
        tls(&gateway),
        tls_config(&server.ca(), None, false),
        "localhost",
    )
    .await
    .expect("TLS handshake");
    let response = collect(
        send_h1_over(stream, get_with("/whoami", None))
            .await
            .expect("HTTPS request"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(orders.app.last().all("x-forwarded-proto"), ["https"]);
}

/// A client config trusting `ca`, offering only `alpn`.
fn alpn_client(ca: &std::path::Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut config = tls_config(ca, None, false);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn the_https_listener_speaks_http_1_1_and_http_2_by_alpn() {
    let certs = Certs::new();
    let orders = MeshService::start(&certs, "orders").await;
    let server = ServerCert::new();
    let gateway = open_gateway(&certs, &orders, &server).await;

    // HTTP/1.1, asked for by ALPN and without ALPN.
    for alpn in [&[b"http/1.1".as_slice()][..], &[][..]] {
        let stream = tls_connect(tls(&gateway), alpn_client(&server.ca(), alpn), "localhost")
            .await
            .expect("TLS handshake");
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert!(
            negotiated.is_none() || negotiated.as_deref() == Some(b"http/1.1"),
            "{negotiated:?}"
        );
        let response = collect(
            send_h1_over(stream, get_with("/h1", None))
                .await
                .expect("HTTP/1.1 request"),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(orders.app.last().path, "/h1");
    }

    // HTTP/2.
    let stream = tls_connect(
        tls(&gateway),
        alpn_client(&server.ca(), &[b"h2"]),
        "localhost",
    )
    .await
    .expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::get(format!("https://localhost/h2/{i}"))
            .body(empty())
            .expect("request");
        let response = sender.send_request(req).await.expect("HTTP/2 request");
        assert_eq!(response.version(), http::Version::HTTP_2);
        let response = collect(response).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(json(&response)["path"], format!("/h2/{i}"));
    }

    // A client that does not trust the server's CA gets no session.
    let other = ServerCert::new();
    assert!(
        tls_connect(
            tls(&gateway),
            tls_config(&other.ca(), None, false),
            "localhost"
        )
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_server_certificate_is_served_without_a_restart() {
    let certs = Certs::new();
    let orders = MeshService::start(&certs, "orders").await;
    let server = ServerCert::new();
    let gateway = open_gateway(&certs, &orders, &server).await;
    let pid = gateway.pid();
    let next = ServerCert::new();
    assert!(
        tls_connect(
            tls(&gateway),
            tls_config(&next.ca(), None, false),
            "localhost"
        )
        .await
        .is_err(),
        "the next CA is not trusted yet"
    );
    // The key first, then the certificate, each renamed into place.
    for (from, to) in [(next.key(), server.key()), (next.cert(), server.cert())] {
        let tmp = to.with_extension("new");
        std::fs::copy(&from, &tmp).expect("copy");
        std::fs::rename(&tmp, &to).expect("rename");
    }
    eventually("the new certificate served", async || {
        tls_connect(
            tls(&gateway),
            tls_config(&next.ca(), None, false),
            "localhost",
        )
        .await
        .is_ok()
    })
    .await;
    let stream = tls_connect(
        tls(&gateway),
        tls_config(&next.ca(), None, false),
        "localhost",
    )
    .await
    .expect("TLS handshake");
    let response = collect(
        send_h1_over(stream, get_with("/after", None))
            .await
            .expect("HTTPS request"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(gateway.pid(), pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_https_listener_passes_the_tls_scan() {
    let certs = Certs::new();
    let orders = MeshService::start(&certs, "orders").await;
    let server = ServerCert::new();
    let gateway = open_gateway(&certs, &orders, &server).await;
    let result = crate::tls_scan::scan(tls(&gateway)).await;
    let connectivity = &result["connectivity_result"];
    // Clients from the internet have no certificate to show.
    assert_ne!(
        connectivity["client_auth_requirement"], "REQUIRED",
        "{connectivity}"
    );
    assert_eq!(connectivity["highest_tls_version_supported"], "TLS_1_3");
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert_eq!(
            crate::tls_scan::accepted(&result, old),
            Vec::<String>::new(),
            "{old} must be refused"
        );
    }
    // TLS 1.2, if offered (browsers and old clients), only with forward
    // secrecy and AEAD.
    for suite in crate::tls_scan::accepted(&result, "tls_1_2_cipher_suites") {
        assert!(suite.contains("_ECDHE_"), "{suite} has no forward secrecy");
        assert!(
            suite.contains("_GCM_") || suite.contains("CHACHA20_POLY1305"),
            "{suite} is not AEAD"
        );
    }
    let tls13 = crate::tls_scan::accepted(&result, "tls_1_3_cipher_suites");
    assert!(
        tls13.contains(&"TLS_AES_128_GCM_SHA256".to_owned()),
        "{tls13:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plain_listener_cuts_off_a_slow_header_sender() {
    let certs = Certs::new();
    let app = EchoApp::start("monolith").await;
    let gateway = GatewaySetup::new(&certs)
        .plain("monolith", &[app.addr])
        .gateway("  routes:\n    - { path_prefix: /, service: monolith }\n")
        .extra("http:\n  header_read_timeout: 1s\n  idle_timeout: 30s\n")
        .start();
    // A slow loris: a header byte every 200 ms, never the blank line.
    let head = b"GET / HTTP/1.1\r\nHost: api.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (took, mut tcp) = trickle_head(plain(&gateway), head).await;
    let end = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(end.is_some(), "still open after {took:?}");
    assert!(took < Duration::from_secs(6), "cut after {took:?}");
    assert_eq!(app.count(), 0);
    // A prompt client is served.
    let response = call(&gateway, get_with("/ok", None)).await;
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_websocket_passes_the_gateway_with_its_token_in_the_query() {
    use crate::support::websocket::{WsServer, exercise, try_ws_connect, ws_request};
    let certs = Certs::new();
    let keys = TokenKeys::new();
    let server = WsServer::start().await;
    let chat = Sidecar::start(&SidecarConfig::new("chat", &certs).inbound(server.addr));
    let gateway = GatewaySetup::new(&certs)
        .mesh("chat", &[chat.inbound()])
        .gateway(&jwt_yaml(
            &keys.pem_and_jwks(),
            "    query_param: access_token\n",
        ))
        .gateway("  routes:\n    - { path_prefix: /socket, service: chat }\n")
        .start();
    let addr = plain(&gateway);
    let token = keys.es256(&claims("alice", &["user"]));

    // Browsers cannot set Authorization on a WebSocket: the query carries it.
    let url = format!("ws://api.test/socket?access_token={token}");
    let (ws, _) = try_ws_connect(addr, ws_request(&url))
        .await
        .expect("the upgrade through the gateway");
    exercise(ws).await;
    let seen = &server.seen()[0];
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert!(
        !seen.path.contains(&token),
        "the token went on to the app: {}",
        seen.path
    );
    // Without a token, no upgrade.
    let refused = try_ws_connect(addr, ws_request("ws://api.test/socket")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("an upgrade without a token: {:?}", other.map(|(_, r)| r)),
    }
    assert_eq!(server.upgraded(), 1);
    assert_not_logged(&gateway, &token);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_opens_no_connect_tunnels() {
    let certs = Certs::new();
    let app = EchoApp::start("monolith").await;
    let gateway = GatewaySetup::new(&certs)
        .plain("monolith", &[app.addr])
        .gateway("  routes:\n    - { path_prefix: /, service: monolith }\n")
        .start();
    // A client using the gateway as a forward proxy, to the app's port.
    let req = Request::builder()
        .method("CONNECT")
        .uri(app.addr.to_string())
        .header("host", app.addr.to_string())
        .body(empty())
        .expect("request");
    let response = call(&gateway, req).await;
    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(
        response.header("pilotfish-error"),
        Some("tunnel-not-allowed")
    );
    assert_eq!(app.count(), 0, "nothing reached the app");
}
