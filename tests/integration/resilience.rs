//! Resilience against real failures of real processes: demo services
//! behind their own sidecars, made to fail with their knobs, called from an
//! orders sidecar whose policies must absorb it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use nix::sys::signal::Signal;

use crate::support::*;

const INBOUND: &str = r#"pilotfish_requests_total{direction="inbound",service="users""#;

/// `n` users endpoints: each a demo app behind its own sidecar.
struct Users {
    apps: Vec<DemoApp>,
    sidecars: Vec<Sidecar>,
}

impl Users {
    fn start(certs: &Certs, n: usize, env: &[(&str, &str)]) -> Self {
        let leaf = certs.issue("users");
        let apps: Vec<DemoApp> = (0..n).map(|_| DemoApp::start("users", env)).collect();
        let sidecars = apps
            .iter()
            .map(|app| {
                Sidecar::start(
                    &SidecarConfig::with_leaf("users", certs, leaf.clone()).inbound(app.addr),
                )
            })
            .collect();
        Self { apps, sidecars }
    }

    fn endpoints(&self) -> Vec<SocketAddr> {
        self.sidecars.iter().map(Sidecar::inbound).collect()
    }

    /// Requests the apps received, counted by their sidecars.
    async fn requests(&self) -> f64 {
        let mut total = 0.0;
        for sidecar in &self.sidecars {
            total += metric_sum(sidecar, INBOUND).await;
        }
        total
    }
}

/// An orders sidecar calling `users` at `endpoints`, with `users_yaml`
/// under the destination and `routes` (4-space indented list items).
fn orders(certs: &Certs, endpoints: &[SocketAddr], users_yaml: &str, routes: &str) -> Sidecar {
    let mut config = SidecarConfig::new("orders", certs).service("users", endpoints, users_yaml);
    if !routes.is_empty() {
        config = config.routes(routes);
    }
    Sidecar::start(&config)
}

async fn call(orders: &Sidecar, host: &str, path: &str) -> Collected {
    collect(send_h1(orders.outbound(), get(host, path)).await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_endpoint_is_ejected_and_rejoins_after_a_probe() {
    let certs = Certs::new();
    let mut users = Users::start(&certs, 3, &[]);
    let orders = orders(
        &certs,
        &users.endpoints(),
        "      outlier_detection: { consecutive_failures: 3, base_ejection: 1s, max_ejection: 2s }\n",
        "",
    );
    let load = Load::start(orders.outbound(), "users", "/echo", 2);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let victim = users.sidecars[0].inbound();
    users.sidecars[0].signal(Signal::SIGKILL);
    let _ = users.sidecars[0].wait_exit(Duration::from_secs(5));
    wait_metric(
        &orders,
        r#"pilotfish_outlier_ejections_total{service="users"}"#,
        1.0,
        Duration::from_secs(10),
    )
    .await;
    let view = collect(send_h1(orders.admin, get("admin", "/destinations")).await)
        .await
        .json();
    let endpoints = view[0]["endpoints"].as_array().expect("endpoints").clone();
    let ejected = endpoints
        .iter()
        .find(|e| e["addr"] == victim.to_string())
        .expect("victim listed");
    assert!(
        !ejected["ejected_for_ms"].is_null() || ejected["probing"] == true,
        "{view}"
    );

    // It comes back at the same address; after its ejection a probe finds
    // it healthy and it takes traffic again.
    let leaf = certs.issue("users");
    let back = Sidecar::start(
        &SidecarConfig::with_leaf("users", &certs, leaf)
            .inbound(users.apps[0].addr)
            .inbound_listen(victim),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric_sum(&back, INBOUND).await < 5.0 {
        assert!(Instant::now() < deadline, "the endpoint never rejoined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = load.stop().await;
    let failed = report.failures.len() as f64 / (report.ok as f64 + report.failures.len() as f64);
    assert!(
        failed < 0.02,
        "{} of {} failed: {:?}",
        report.failures.len(),
        report.ok,
        report.failures
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_on_503_hide_a_flaky_endpoint_and_say_which_attempt_it_was() {
    let certs = Certs::new();
    let users = Users::start(&certs, 2, &[("DEMO_FAIL_RATE", "0.5")]);
    let orders = orders(
        &certs,
        &users.endpoints(),
        "      retries: { attempts: 8, on: [\"503\"] }
      retry_budget: { ratio: 10, min_per_second: 100 }
      outlier_detection: { enabled: false }
",
        "",
    );
    let mut failures = 0;
    let mut retried = 0;
    for _ in 0..100 {
        let response = call(&orders, "users", "/echo").await;
        if response.status != 200 {
            failures += 1;
            continue;
        }
        let attempt = &response.json()["headers"]["pilotfish-attempt"];
        if let Some(n) = attempt[0].as_str() {
            assert!(n.parse::<u32>().expect("a number") >= 2);
            retried += 1;
        }
    }
    assert!(failures <= 2, "{failures} of 100 failed despite retries");
    assert!(
        retried >= 20,
        "only {retried} of 100 needed a retry at a 50% failure rate"
    );
    assert!(
        metric(
            &orders,
            r#"pilotfish_retries_total{condition="503",service="users"}"#
        )
        .await
            >= 20.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_endpoint_costs_one_attempt_and_the_total_timeout_bounds_the_rest() {
    let certs = Certs::new();
    let hanging = Users::start(&certs, 1, &[("DEMO_HANG", "1")]);
    let healthy = Users::start(&certs, 1, &[]);
    let endpoints = [hanging.endpoints(), healthy.endpoints()].concat();
    let orders = orders(
        &certs,
        &endpoints,
        "      per_try_timeout: 200ms
      timeout: 5s
      load_balancer: round-robin
      retries: { attempts: 3, on: [per-try-timeout] }
",
        "    - { host: users-strict, service: users, timeout: 600ms, per_try_timeout: 5s }\n",
    );
    for _ in 0..6 {
        let started = Instant::now();
        let response = call(&orders, "users", "/echo").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }
    assert!(
        metric(
            &orders,
            r#"pilotfish_timeouts_total{kind="attempt",service="users"}"#
        )
        .await
            >= 1.0
    );

    // Both hang now: the route's total timeout answers, in time.
    healthy.apps[0].set_knobs("hang=1").await;
    let started = Instant::now();
    let response = call(&orders, "users-strict", "/echo").await;
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.header("pilotfish-error"), Some("response-timeout"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(4),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn when_everything_fails_the_budget_caps_retries_and_the_breaker_opens_then_closes() {
    let certs = Certs::new();
    let users = Users::start(&certs, 2, &[("DEMO_FAIL_RATE", "1")]);
    let orders = orders(
        &certs,
        &users.endpoints(),
        "      retries: { attempts: 3, on: [\"503\"] }
      retry_budget: { ratio: 0.2, min_per_second: 1, window: 1s }
      outlier_detection: { enabled: false }
      breaker: { error_threshold_percent: 50, volume_threshold: 20, window: 10s, buckets: 10, reset_timeout: 2s }
",
        "",
    );
    for _ in 0..20 {
        assert_eq!(call(&orders, "users", "/echo").await.status, 503);
    }
    let reached = users.requests().await;
    // 3 attempts each would be 60; the budget allows about 20% more.
    assert!(
        (20.0..=30.0).contains(&reached),
        "{reached} requests reached the backends"
    );
    assert!(
        metric(
            &orders,
            r#"pilotfish_retry_budget_exhausted_total{service="users"}"#
        )
        .await
            >= 1.0
    );

    // The breaker is open: requests fail fast and reach nobody.
    for _ in 0..10 {
        let started = Instant::now();
        let response = call(&orders, "users", "/echo").await;
        assert_eq!(response.status, 503);
        assert_eq!(response.header("pilotfish-error"), Some("breaker-open"));
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert_eq!(
        users.requests().await,
        reached,
        "an open breaker let requests through"
    );
    assert_eq!(
        metric(&orders, r#"pilotfish_breaker_state{service="users"}"#).await,
        1.0
    );

    // The backends recover; after the reset timeout a probe closes it.
    for app in &users.apps {
        app.set_knobs("fail=0").await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for _ in 0..5 {
        assert_eq!(call(&orders, "users", "/echo").await.status, 200);
    }
    assert_eq!(
        metric(&orders, r#"pilotfish_breaker_state{service="users"}"#).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn post_is_retried_only_when_it_is_safe() {
    let certs = Certs::new();
    let users = Users::start(&certs, 1, &[("DEMO_FAIL_RATE", "1")]);
    let retries = "retries: { attempts: 3, on: [connect-failure, \"503\"] }";
    let orders = orders(
        &certs,
        &users.endpoints(),
        &format!(
            "      {retries}\n      retry_budget: {{ ratio: 10 }}\n      outlier_detection: {{ enabled: false }}\n"
        ),
        "    - host: users-posts
      service: users
      retries: { attempts: 3, on: [\"503\"], non_idempotent: true }
",
    );
    let post = |host: &str, key: Option<&str>| {
        let mut req = Request::post("/echo").header("host", host);
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.body(body("{}")).expect("request")
    };
    let mut seen = users.requests().await;
    let mut reached = async |users: &Users| {
        let now = users.requests().await;
        let delta = now - seen;
        seen = now;
        delta
    };
    collect(send_h1(orders.outbound(), post("users", None)).await).await;
    assert_eq!(
        reached(&users).await,
        1.0,
        "a POST that reached the app is not sent again"
    );
    collect(send_h1(orders.outbound(), post("users", Some("order-7"))).await).await;
    assert_eq!(
        reached(&users).await,
        3.0,
        "an Idempotency-Key makes it safe"
    );
    collect(send_h1(orders.outbound(), post("users-posts", None)).await).await;
    assert_eq!(reached(&users).await, 3.0, "the route opted in");
    call(&orders, "users", "/echo").await;
    assert_eq!(reached(&users).await, 3.0, "GET is idempotent");

    // A POST that never reached anything (connect refused) is retried.
    let good = Users::start(&certs, 1, &[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let flaky = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[dead, good.endpoints()[0]],
        &format!("      {retries}\n      load_balancer: round-robin\n      outlier_detection: {{ enabled: false }}\n"),
    ));
    for _ in 0..6 {
        let response = collect(send_h1(flaky.outbound(), post("users", None)).await).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_breaker_answers_with_the_route_fallback() {
    let certs = Certs::new();
    let users = Users::start(&certs, 1, &[("DEMO_FAIL_RATE", "1")]);
    let backup_app = DemoApp::start("backup", &[]);
    let backup = Sidecar::start(&SidecarConfig::new("backup", &certs).inbound(backup_app.addr));
    let orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service(
                "users",
                &users.endpoints(),
                "      retries: { attempts: 1 }
      outlier_detection: { enabled: false }
      breaker: { volume_threshold: 5, reset_timeout: 60s }
",
            )
            .service("backup", &[backup.inbound()], "")
            .routes(
                "    - host: users-cached
      service: users
      fallback: { status: 200, headers: { x-from: cache }, body: \"cached users\" }
    - host: users-backup
      service: users
      fallback: { service: backup }
",
            ),
    );
    for _ in 0..5 {
        assert_eq!(call(&orders, "users", "/echo").await.status, 503);
    }
    let cached = call(&orders, "users-cached", "/echo").await;
    assert_eq!(
        (cached.status.as_u16(), cached.text().as_str()),
        (200, "cached users")
    );
    assert_eq!(cached.header("x-from"), Some("cache"));
    assert_eq!(cached.header("pilotfish-fallback"), Some("static"));

    let backed = call(&orders, "users-backup", "/echo").await;
    assert_eq!(backed.status, 200, "{}", backed.text());
    assert_eq!(backed.json()["service"], "backup");
    assert_eq!(backed.header("pilotfish-fallback"), Some("backup"));

    let plain = call(&orders, "users", "/echo").await;
    assert_eq!(plain.status, 503);
    assert_eq!(plain.header("pilotfish-error"), Some("breaker-open"));
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_in_flight_limit_requests_fail_fast() {
    let certs = Certs::new();
    let users = Users::start(&certs, 1, &[("DEMO_DELAY", "1s")]);
    let orders = orders(
        &certs,
        &users.endpoints(),
        "      limits: { max_requests: 3 }\n",
        "",
    );
    let outbound = orders.outbound();
    let requests: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(
                async move { collect(send_h1(outbound, get("users", "/echo")).await).await },
            )
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for request in requests {
        let response = request.await.expect("task");
        match response.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(response.header("pilotfish-error"), Some("overloaded"));
                assert!(
                    response.text().contains("max-requests"),
                    "{}",
                    response.text()
                );
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", response.text()),
        }
    }
    assert_eq!((ok, limited), (3, 2));
    let series = r#"pilotfish_limit_rejections_total{limit="max-requests",service="users"}"#;
    assert_eq!(metric(&orders, series).await, 2.0);
}
