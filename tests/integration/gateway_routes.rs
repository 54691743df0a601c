//! The gateway's routes: matching and its precedence, weighted and sticky
//! splits (and their weights changed by a reload under load), the
//! strangler fig in front of a plaintext monolith, filters (rewrite,
//! header changes, redirect, direct response, body limit) and CORS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::gateway::*;
use crate::support::*;

const APPLIED: &str = r#"pilotfish_reloads_total{kind="config",result="applied"}"#;
const SOON: Duration = Duration::from_secs(15);

/// Which app answered (the echo app's `app` field).
fn app_of(response: &Collected) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    json(response)["app"]
        .as_str()
        .unwrap_or_else(|| panic!("not an echo answer: {}", response.text()))
        .to_owned()
}

/// Sends `n` requests built by `make` (given the request's number) from
/// `clients` concurrent clients, each on a new connection; the answers in
/// request order.
async fn many(
    gateway: &Sidecar,
    n: usize,
    clients: usize,
    make: impl Fn(usize) -> http::Request<TestBody> + Send + Sync + 'static,
) -> Vec<Collected> {
    let addr = plain(gateway);
    let make = Arc::new(make);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let make = make.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in (c..n).step_by(clients) {
                    out.push((i, collect(send_h1(addr, make(i)).await).await));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// Method, path, request fields, and the app that must answer.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test(flavor = "multi_thread")]
async fn routes_match_by_exact_path_prefix_method_header_query_and_pattern_in_precedence() {
    let certs = Certs::new();
    let names = ["a", "b", "c", "d", "e", "f"];
    let mut apps = Vec::new();
    for name in names {
        apps.push(EchoApp::start(name).await);
    }
    let mut setup = GatewaySetup::new(&certs);
    for app in &apps {
        setup = setup.plain(&app.name, &[app.addr]);
    }
    // Declared from the least specific on, so that order cannot be what
    // decides.
    let gateway = setup
        .gateway(
            "  routes:
    - name: prefix
      path_prefix: /api
      service: a
    - name: exact
      matches: [{ path: { exact: /api/login } }]
      service: b
    - name: post-only
      matches: [{ path: { prefix: /api/items }, method: POST }]
      service: c
    - name: header
      matches: [{ path: { prefix: /api/items }, headers: { x-canary: \"yes\" } }]
      service: d
    - name: query
      matches: [{ path: { prefix: /api/search }, query_params: { v: \"2\" } }]
      service: e
    - name: pattern
      matches: [{ path: { pattern: /api/users/*/orders } }]
      service: f
",
        )
        .start();
    let cases: &[Case] = &[
        ("GET", "/api/login", &[], "b"),
        ("GET", "/api/login/more", &[], "a"),
        ("GET", "/api/other", &[], "a"),
        ("GET", "/api", &[], "a"),
        ("POST", "/api/items", &[], "c"),
        ("post", "/api/items/9", &[], "c"),
        ("GET", "/api/items", &[("x-canary", "yes")], "d"),
        ("GET", "/api/items", &[("x-canary", "no")], "a"),
        ("GET", "/api/items", &[], "a"),
        ("GET", "/api/search?v=2", &[], "e"),
        ("GET", "/api/search?q=x&v=2", &[], "e"),
        ("GET", "/api/search?v=1", &[], "a"),
        ("GET", "/api/users/7/orders", &[], "f"),
        ("GET", "/api/users/abc/orders", &[], "f"),
        ("GET", "/api/users/7/orders/9", &[], "a"),
        ("GET", "/api/users/7/invoices", &[], "a"),
    ];
    for (method, path, headers, want) in cases {
        let mut b = request(&method.to_uppercase(), path);
        for (k, v) in *headers {
            b = b.header(*k, *v);
        }
        let response = call(&gateway, b.body(empty()).expect("request")).await;
        assert_eq!(
            app_of(&response),
            *want,
            "{method} {path} {headers:?}: {}",
            response.text()
        );
    }
    // Nothing matches outside /api: 404, as a web server would answer.
    let response = call(&gateway, get_with("/elsewhere", None)).await;
    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(response.header("pilotfish-error"), Some("not-found"));
    // A destination's name is no way in: only routes are.
    let by_name = http::Request::get("/elsewhere")
        .header("host", "a")
        .body(empty())
        .expect("request");
    let response = call(&gateway, by_name).await;
    assert_eq!(response.status, 404, "{}", response.text());
}

/// A gateway splitting `/echo` between `v1` and `v2` (plaintext apps) by
/// `weights`, with `sticky` YAML (6-space indent) if any.
fn split_setup(
    certs: &Certs,
    leaf: &Leaf,
    v1: &EchoApp,
    v2: &EchoApp,
    weights: (u32, u32),
    sticky: &str,
) -> GatewaySetup {
    GatewaySetup::with_leaf(certs, leaf.clone())
        .plain("v1", &[v1.addr])
        .plain("v2", &[v2.addr])
        .gateway(&format!(
            "  routes:
    - name: canary
      path_prefix: /
      backends:
        - {{ service: v1, weight: {} }}
        - {{ service: v2, weight: {} }}
{sticky}",
            weights.0, weights.1
        ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_90_10_split_over_2000_requests_lands_near_its_weights() {
    let certs = Certs::new();
    let (v1, v2) = (EchoApp::start("v1").await, EchoApp::start("v2").await);
    let gateway = split_setup(&certs, &certs.issue("gateway"), &v1, &v2, (90, 10), "").start();
    let answers = many(&gateway, 2000, 8, |i| get_with(&format!("/echo/{i}"), None)).await;
    let mut counts = BTreeMap::new();
    for response in &answers {
        *counts.entry(app_of(response)).or_insert(0usize) += 1;
    }
    let v2_share = counts.get("v2").copied().unwrap_or(0) as f64 / 2000.0;
    assert!(
        (0.06..=0.14).contains(&v2_share),
        "v2 got {:.1}% ({counts:?})",
        v2_share * 100.0
    );
    assert_eq!(v1.count() + v2.count(), 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_sticky_by_header_keeps_each_client_on_one_side() {
    let certs = Certs::new();
    let (v1, v2) = (EchoApp::start("v1").await, EchoApp::start("v2").await);
    let gateway = split_setup(
        &certs,
        &certs.issue("gateway"),
        &v1,
        &v2,
        (50, 50),
        "      sticky: { header: x-session }\n",
    )
    .start();
    let clients = 20;
    let answers = many(&gateway, clients * 50, 8, move |i| {
        request("GET", "/echo")
            .header("x-session", format!("user-{}", i % clients))
            .body(empty())
            .expect("request")
    })
    .await;
    let mut sides: BTreeMap<usize, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (i, response) in answers.iter().enumerate() {
        sides
            .entry(i % clients)
            .or_default()
            .insert(app_of(response));
    }
    for (client, side) in &sides {
        assert_eq!(side.len(), 1, "client {client} went to {side:?}");
    }
    let used: std::collections::BTreeSet<_> = sides.values().flatten().collect();
    assert_eq!(used.len(), 2, "20 clients all on {used:?}: not a split");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_sticky_by_cookie_sets_it_once_and_keeps_the_client_there() {
    let certs = Certs::new();
    let (v1, v2) = (EchoApp::start("v1").await, EchoApp::start("v2").await);
    let gateway = split_setup(
        &certs,
        &certs.issue("gateway"),
        &v1,
        &v2,
        (50, 50),
        "      sticky: { cookie: pf-side }\n",
    )
    .start();
    let mut used = std::collections::BTreeSet::new();
    for client in 0..16 {
        let first = call(&gateway, get_with("/echo", None)).await;
        let side = app_of(&first);
        let set_cookie = first
            .header("set-cookie")
            .unwrap_or_else(|| panic!("client {client}: no cookie set: {:?}", first.headers))
            .to_owned();
        let pair = set_cookie.split(';').next().expect("name=value").trim();
        assert!(pair.starts_with("pf-side="), "{set_cookie}");
        for _ in 0..30 {
            let req = request("GET", "/echo")
                .header("cookie", format!("theme=dark; {pair}"))
                .body(empty())
                .expect("request");
            let again = call(&gateway, req).await;
            assert_eq!(app_of(&again), side, "client {client} with {pair} moved");
            assert!(
                again.header("set-cookie").is_none_or(|c| c.contains(pair)),
                "a different cookie: {:?}",
                again.header("set-cookie")
            );
        }
        used.insert(side);
    }
    assert_eq!(used.len(), 2, "16 clients all on {used:?}: not a split");
}

#[tokio::test(flavor = "multi_thread")]
async fn new_weights_on_reload_take_effect_under_load_without_a_failed_request() {
    let certs = Certs::new();
    let leaf = certs.issue("gateway");
    let (v1, v2) = (EchoApp::start("v1").await, EchoApp::start("v2").await);
    let gateway = split_setup(&certs, &leaf, &v1, &v2, (100, 0), "").start();
    let load = Load::start(plain(&gateway), "api.test", "/echo", 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..20 {
        assert_eq!(app_of(&call(&gateway, get_with("/echo", None)).await), "v1");
    }

    let flipped = split_setup(&certs, &leaf, &v1, &v2, (0, 100), "").yaml();
    rewrite(&gateway.config_path, &flipped);
    wait_metric(&gateway, APPLIED, 1.0, SOON).await;
    for _ in 0..20 {
        assert_eq!(app_of(&call(&gateway, get_with("/echo", None)).await), "v2");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert!(report.ok > 50, "too little load: {}", report.ok);
    assert!(v1.count() > 20 && v2.count() >= 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn strangler_fig_moves_paths_off_the_monolith_one_config_change_at_a_time() {
    let certs = Certs::new();
    let leaf = certs.issue("gateway");
    let monolith = EchoApp::start("monolith").await;
    let orders = MeshService::start(&certs, "orders").await;
    let users = MeshService::start(&certs, "users").await;
    let payments = MeshService::start(&certs, "payments").await;
    let setup = |moved_payments: bool| {
        let mut setup = GatewaySetup::with_leaf(&certs, leaf.clone())
            .plain("monolith", &[monolith.addr])
            .mesh("orders", &[orders.endpoint()])
            .mesh("users", &[users.endpoint()]);
        let mut routes = "  routes:
    - { path_prefix: /orders, service: orders }
    - { path_prefix: /users, service: users }
"
        .to_owned();
        if moved_payments {
            setup = setup.mesh("payments", &[payments.endpoint()]);
            routes.push_str("    - { path_prefix: /payments, service: payments }\n");
        }
        routes.push_str("    - { path_prefix: /, service: monolith }\n");
        setup.gateway(&routes)
    };
    let gateway = setup(false).start();
    let expect = async |path: &str, want: &str| {
        let response = call(&gateway, get_with(path, None)).await;
        assert_eq!(app_of(&response), want, "{path}");
        assert_eq!(
            json(&response)["path"],
            path.split('?').next().unwrap_or(path)
        );
    };
    expect("/orders/1", "orders").await;
    expect("/users/alice", "users").await;
    expect("/payments/9", "monolith").await;
    expect("/", "monolith").await;
    expect("/reports/2024?q=1", "monolith").await;
    expect("/ordersx", "monolith").await;

    // Moving /payments is a config change, nothing else.
    let pid = gateway.pid();
    rewrite(&gateway.config_path, &setup(true).yaml());
    wait_metric(&gateway, APPLIED, 1.0, SOON).await;
    expect("/payments/9", "payments").await;
    expect("/orders/1", "orders").await;
    expect("/users/alice", "users").await;
    expect("/reports/2024", "monolith").await;
    assert_eq!(gateway.pid(), pid);
    assert_eq!(payments.app.count(), 1);
}

/// A gateway with a route for each filter, to one plaintext echo app.
async fn filters_gateway(certs: &Certs, app: &EchoApp) -> Sidecar {
    GatewaySetup::new(certs)
        .plain("app", &[app.addr])
        .gateway(
            "  routes:
    - name: strip
      path_prefix: /strip
      service: app
      url_rewrite: { path: { replace_prefix_match: / } }
    - name: replace
      path_prefix: /old
      service: app
      url_rewrite: { path: { replace_prefix_match: /new } }
    - name: full
      matches: [{ path: { exact: /legacy/report } }]
      service: app
      url_rewrite: { hostname: reports.internal, path: { replace_full_path: /v2/report } }
    - name: headers
      path_prefix: /headers
      service: app
      request_header_modifier: { set: { x-env: prod }, add: { x-tag: gw }, remove: [x-drop] }
      response_header_modifier: { set: { x-frame-options: DENY }, add: { x-served-by: gateway }, remove: [x-internal] }
    - name: moved
      path_prefix: /moved
      request_redirect: { scheme: https, hostname: new.example.test, port: 8443, path: { replace_prefix_match: /here }, status_code: 301 }
    - name: moved-default
      path_prefix: /gone
      request_redirect: { hostname: other.example.test }
    - name: maintenance
      path_prefix: /maintenance
      direct_response: { status: 503, body: down for maintenance, content_type: text/plain }
    - name: upload
      path_prefix: /upload
      service: app
      max_request_body: 1KiB
",
        )
        .start()
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrites_change_the_path_and_host_the_app_gets() {
    let certs = Certs::new();
    let app = EchoApp::start("app").await;
    let gateway = filters_gateway(&certs, &app).await;
    for (path, want, query) in [
        ("/strip/a/b?x=1", "/a/b", Some("x=1")),
        ("/strip", "/", None),
        ("/old/thing", "/new/thing", None),
        ("/legacy/report", "/v2/report", None),
    ] {
        let response = call(&gateway, get_with(path, None)).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let got = app.last();
        assert_eq!(got.path, want, "{path}");
        assert_eq!(got.query.as_deref(), query, "{path}");
    }
    let host = app.last().header("host").unwrap_or_default();
    assert!(host.starts_with("reports.internal"), "{host}");
}

#[tokio::test(flavor = "multi_thread")]
async fn header_modifiers_set_add_and_remove_on_the_request_and_the_response() {
    let certs = Certs::new();
    let app = EchoApp::start("app").await;
    let gateway = filters_gateway(&certs, &app).await;
    let req = request("GET", "/headers")
        .header("x-env", "dev")
        .header("x-tag", "client")
        .header("x-drop", "1")
        .body(empty())
        .expect("request");
    let response = call(&gateway, req).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let got = app.last();
    assert_eq!(got.all("x-env"), ["prod"]);
    let tags = got.all("x-tag").join(",");
    assert!(tags.contains("client") && tags.contains("gw"), "{tags}");
    assert!(got.all("x-drop").is_empty(), "{got:?}");

    assert_eq!(response.header("x-frame-options"), Some("DENY"));
    assert_eq!(response.header("x-served-by"), Some("gateway"));
    assert_eq!(response.header("x-internal"), None);
    assert_eq!(response.header("x-backend"), Some("app"), "others stay");
    // Other routes are untouched.
    let response = call(&gateway, get_with("/strip/x", None)).await;
    assert_eq!(response.header("x-internal"), Some("secret"));
    assert_eq!(response.header("x-served-by"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_and_direct_responses_answer_at_the_gateway() {
    let certs = Certs::new();
    let app = EchoApp::start("app").await;
    let gateway = filters_gateway(&certs, &app).await;

    let response = call(&gateway, get_with("/moved/page?q=1", None)).await;
    assert_eq!(response.status, 301, "{}", response.text());
    let location = response.header("location").unwrap_or_default();
    assert!(
        location.starts_with("https://new.example.test:8443/here/page"),
        "{location}"
    );
    // Default status (302), scheme and path kept.
    let response = call(&gateway, get_with("/gone/x", None)).await;
    assert_eq!(response.status, 302, "{}", response.text());
    let location = response.header("location").unwrap_or_default();
    assert!(
        location.starts_with("http://other.example.test") && location.contains("/gone/x"),
        "{location}"
    );

    let response = call(&gateway, get_with("/maintenance/anything", None)).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.text(), "down for maintenance");
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        response.headers
    );
    assert_eq!(app.count(), 0, "the app was called");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_route_s_limit_gets_413_and_one_under_it_goes_through() {
    let certs = Certs::new();
    let app = EchoApp::start("app").await;
    let gateway = filters_gateway(&certs, &app).await;
    let post = |size: usize| {
        request("POST", "/upload")
            .header("content-type", "application/octet-stream")
            .header("content-length", size.to_string())
            .body(body(vec![b'x'; size]))
            .expect("request")
    };
    let response = call(&gateway, post(2000)).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(app.count(), 0, "an oversized body was sent on");
    let response = call(&gateway, post(500)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(json(&response)["body_bytes"], 500);
    // Exactly the limit is allowed.
    let response = call(&gateway, post(1024)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    // A chunked body says no length up front: it is cut where it passes
    // the limit, and the client still gets 413.
    let chunked = |size: usize| {
        let half = || hyper::body::Frame::data(bytes::Bytes::from(vec![b'x'; size / 2]));
        let frames = vec![half(), half()];
        request("POST", "/upload")
            .header("content-type", "application/octet-stream")
            .body(frames_body(frames))
            .expect("request")
    };
    let response = call(&gateway, chunked(2000)).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.header("pilotfish-error"), Some("body-too-large"));
    let response = call(&gateway, chunked(1000)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(json(&response)["body_bytes"], 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflights_are_answered_at_the_gateway_and_actual_requests_get_their_fields() {
    let certs = Certs::new();
    let keys = TokenKeys::new();
    let app = EchoApp::start("app").await;
    // The route needs a token: a preflight carries none, and must still
    // be answered.
    let gateway = GatewaySetup::new(&certs)
        .plain("app", &[app.addr])
        .gateway(&jwt_yaml(&keys.pem_and_jwks(), ""))
        .gateway(
            "  routes:
    - name: cors
      path_prefix: /cors
      service: app
      cors:
        allow_origins: [https://app.example.test]
        allow_methods: [GET, POST, PUT]
        allow_headers: [content-type, x-requested-with]
        expose_headers: [x-backend]
        allow_credentials: true
        max_age: 10m
",
        )
        .start();
    let origin = "https://app.example.test";
    let preflight = |origin: &str| {
        request("OPTIONS", "/cors/items")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "content-type")
            .body(empty())
            .expect("request")
    };
    let response = call(&gateway, preflight(origin)).await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    let methods = response
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert!(methods.contains("PUT"), "{methods}");
    let headers = response
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(headers.contains("content-type"), "{headers}");
    assert_eq!(response.header("access-control-max-age"), Some("600"));
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );

    // An origin not on the list is told nothing.
    let response = call(&gateway, preflight("https://evil.test")).await;
    assert_eq!(
        response.header("access-control-allow-origin"),
        None,
        "{:?}",
        response.headers
    );
    assert_eq!(app.count(), 0, "a preflight reached the app");

    // The actual request.
    let token = keys.es256(&claims("alice", &[]));
    let actual = |origin: &str| {
        request("GET", "/cors/items")
            .header("origin", origin)
            .header("authorization", format!("Bearer {token}"))
            .body(empty())
            .expect("request")
    };
    let response = call(&gateway, actual(origin)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    let vary: Vec<String> = response
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .collect();
    assert!(vary.iter().any(|v| v.contains("origin")), "{vary:?}");
    let exposed = response
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-backend"), "{exposed}");
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    let response = call(&gateway, actual("https://evil.test")).await;
    assert_eq!(response.header("access-control-allow-origin"), None);
    assert_not_logged(&gateway, &token);
}
