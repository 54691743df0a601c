//! Rate limits through real sidecars: accuracy of the token bucket under
//! load, per-caller limits, the 429 and its headers, gRPC's
//! RESOURCE_EXHAUSTED, shadow mode, reloads, a global limit shared by two
//! replicas through a real Redis (killed and restarted mid-run), and
//! retries that wait for `Retry-After`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use hyper_util::rt::TokioIo;

use crate::support::redis::Redis;
use crate::support::*;

const SOON: Duration = Duration::from_secs(15);

/// Statuses seen during a run.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    ok: u64,
    limited: u64,
    other: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.ok += other.ok;
        self.limited += other.limited;
        self.other += other.other;
    }
}

/// `clients` keep-alive connections sending `GET path` as fast as they
/// can for `time`; returns the statuses and how long it really took.
async fn hammer(
    addr: SocketAddr,
    host: &str,
    path: &str,
    clients: usize,
    time: Duration,
) -> (Counts, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, host, path) = (stop.clone(), host.to_owned(), path.to_owned());
            tokio::spawn(async move {
                let mut counts = Counts::default();
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                while !stop.load(Ordering::Relaxed) {
                    let response = sender
                        .send_request(get(&host, &path))
                        .await
                        .expect("response");
                    match collect(response).await.status.as_u16() {
                        200 => counts.ok += 1,
                        429 => counts.limited += 1,
                        _ => counts.other += 1,
                    }
                }
                counts
            })
        })
        .collect();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Counts::default();
    for task in tasks {
        total += task.await.expect("client");
    }
    (total, started.elapsed())
}

/// Asserts `admitted` is within `share` of `expected`.
fn about(admitted: u64, expected: f64, share: f64, what: &str) {
    eprintln!("{what}: {admitted} admitted, expected {expected:.1}");
    let low = expected * (1.0 - share);
    let high = expected * (1.0 + share);
    assert!(
        (low..=high).contains(&(admitted as f64)),
        "{what}: {admitted} admitted, expected {expected:.0} (±{:.0}%)",
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_far_above_the_limit_gets_rate_times_time_plus_burst() {
    let pair = Pair::start_with_orders(
                "rate_limits:\n  - { name: to-users, direction: outbound, service: users, rate: 100, burst: 20 }\n",
    )
    .await;
    let orders = &pair.orders;
    let (counts, took) = hammer(
        orders.outbound(),
        "users",
        "/echo",
        8,
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(counts.other, 0, "{counts:?}");
    assert!(
        counts.limited > counts.ok,
        "the client went far above: {counts:?}"
    );
    about(
        counts.ok,
        100.0 * took.as_secs_f64() + 20.0,
        0.05,
        "admitted",
    );
    let allowed = r#"pilotfish_rate_limit_decisions_total{limit="to-users",decision="allowed"}"#;
    let limited = r#"pilotfish_rate_limit_decisions_total{limit="to-users",decision="limited"}"#;
    assert_eq!(metric(orders, allowed).await, counts.ok as f64);
    assert_eq!(metric(orders, limited).await, counts.limited as f64);
}

/// users behind its sidecar, with `limits`; orders and checkout call it.
struct Callers {
    orders: Sidecar,
    checkout: Sidecar,
    users: Sidecar,
    _app: TestApp,
    _certs: Certs,
}

impl Callers {
    async fn start(limits: &str) -> Self {
        let certs = Certs::new();
        let app = TestApp::start().await;
        let users = Sidecar::start(
            &SidecarConfig::new("users", &certs)
                .inbound(app.addr)
                .extra(limits),
        );
        let caller = |name: &str| {
            Sidecar::start(&SidecarConfig::new(name, &certs).service(
                "users",
                &[users.inbound()],
                "",
            ))
        };
        Self {
            orders: caller("orders"),
            checkout: caller("checkout"),
            users,
            _app: app,
            _certs: certs,
        }
    }
}

async fn statuses(sidecar: &Sidecar, count: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(count);
    for _ in 0..count {
        let response = collect(send_h1(sidecar.outbound(), get("users", "/echo")).await).await;
        statuses.push(response.status.as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn each_caller_has_its_own_bucket_and_the_429_says_when_to_come_back() {
    let mesh = Callers::start(
        "rate_limits:
  - name: per-caller
    direction: inbound
    key: caller
    rate: 1
    burst: 5
    overrides:
      - { caller: { service: checkout }, rate: 1000 }
",
    )
    .await;
    // orders gets its burst, then 429s; checkout, with its own bucket and
    // a higher rate, is not affected.
    let orders = statuses(&mesh.orders, 8).await;
    assert_eq!(orders[..5], [200; 5], "{orders:?}");
    assert!(orders[5..].iter().all(|s| *s == 429), "{orders:?}");
    assert!(statuses(&mesh.checkout, 30).await.iter().all(|s| *s == 200));

    let limited = collect(send_h1(mesh.orders.outbound(), get("users", "/echo")).await).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("pilotfish-error"), Some("rate-limited"));
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(
        (1..=1).contains(&retry_after),
        "a token a second: {retry_after}"
    );
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"per-caller\";q=1;w=1")
    );
    assert_eq!(
        limited.header("ratelimit"),
        Some(format!("\"per-caller\";r=0;t={retry_after}").as_str())
    );
    assert!(
        limited.text().contains("rate limit \"per-caller\""),
        "{}",
        limited.text()
    );

    // A gRPC call gets its status the gRPC way.
    let grpc = Request::post("/grpc.health.v1.Health/Check")
        .header("host", "users")
        .header("content-type", "application/grpc")
        .body(empty())
        .expect("request");
    let grpc = collect(send_h1(mesh.orders.outbound(), grpc).await).await;
    assert_eq!(grpc.status, 200);
    assert_eq!(grpc.header("grpc-status"), Some("8"), "RESOURCE_EXHAUSTED");
    assert!(
        grpc.header("grpc-message")
            .is_some_and(|m| m.contains("per-caller"))
    );

    let series = r#"pilotfish_rate_limit_decisions_total{limit="per-caller",decision="limited"}"#;
    assert!(metric(&mesh.users, series).await >= 5.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_mode_counts_and_lets_through() {
    let mesh = Callers::start(
        "rate_limits:\n  - { name: trial, direction: inbound, rate: 1, burst: 2, shadow: true }\n",
    )
    .await;
    assert!(statuses(&mesh.orders, 10).await.iter().all(|s| *s == 200));
    let shadow = r#"pilotfish_rate_limit_decisions_total{limit="trial",decision="shadow_limited"}"#;
    assert!(metric(&mesh.users, shadow).await >= 7.0);
    mesh.users.wait_for_log("shadow rate limit", SOON);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_a_limit_and_keeps_the_others_buckets() {
    let limits = |rate: u32| {
        format!(
            "rate_limits:
  - {{ name: changing, direction: inbound, rate: {rate}, burst: {rate} }}
  - {{ name: steady, direction: inbound, key: caller, rate: 0.01, burst: 8, overrides: [{{ caller: {{ service: orders }}, rate: 1000 }}] }}
"
        )
    };
    let mesh = Callers::start(&limits(1)).await;
    // checkout spends `steady`'s burst (8) over a few seconds of
    // `changing` (1 a second), and orders is held by `changing`.
    assert_eq!(statuses(&mesh.checkout, 1).await, [200]);
    assert_eq!(statuses(&mesh.orders, 2).await, [429, 429]);

    let yaml = std::fs::read_to_string(&mesh.users.config_path).expect("config");
    let reloaded = yaml.replace(&limits(1), &limits(1000));
    assert_ne!(yaml, reloaded);
    let tmp = mesh.users.config_path.with_extension("tmp");
    std::fs::write(&tmp, reloaded).expect("write");
    std::fs::rename(&tmp, &mesh.users.config_path).expect("rename");
    wait_metric(
        &mesh.users,
        r#"pilotfish_reloads_total{kind="config",result="applied"}"#,
        1.0,
        SOON,
    )
    .await;
    // The new rate holds...
    assert!(statuses(&mesh.orders, 20).await.iter().all(|s| *s == 200));
    // ...and `steady` kept checkout's bucket: 7 of its 8 tokens left.
    let checkout = statuses(&mesh.checkout, 9).await;
    assert_eq!(
        checkout.iter().filter(|s| **s == 200).count(),
        7,
        "{checkout:?}"
    );
}

/// The global limit's rate and burst.
const GLOBAL_RATE: u32 = 40;

/// Two replicas of users, each behind its sidecar, sharing one limit in
/// Redis; orders balances over both.
struct Replicas {
    orders: Sidecar,
    replicas: [Sidecar; 2],
    _app: TestApp,
    _certs: Certs,
}

impl Replicas {
    async fn start(redis: &Redis) -> Self {
        let certs = Certs::new();
        let app = TestApp::start().await;
        let limit = format!(
            "rate_limits:
  - name: users-global
    direction: inbound
    rate: {GLOBAL_RATE}
    burst: {GLOBAL_RATE}
    global: {{ redis: \"{}\", sync_interval: 50ms, timeout: 200ms }}
",
            redis.url()
        );
        let replica = || {
            Sidecar::start(
                &SidecarConfig::new("users", &certs)
                    .inbound(app.addr)
                    .extra(&limit),
            )
        };
        let replicas = [replica(), replica()];
        let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
            "users",
            &[replicas[0].inbound(), replicas[1].inbound()],
            "      outlier_detection: { enabled: false }\n",
        ));
        Self {
            orders,
            replicas,
            _app: app,
            _certs: certs,
        }
    }

    /// Saturates orders -> users for `secs`; the replicas together must
    /// admit about rate × time + burst.
    async fn admit_about_the_limit(&self, secs: u64, share: f64, what: &str) {
        let time = Duration::from_secs(secs);
        let (counts, took) = hammer(self.orders.outbound(), "users", "/echo", 8, time).await;
        assert_eq!(counts.other, 0, "{counts:?}");
        assert!(
            counts.limited > 0,
            "the client went above the limit: {counts:?}"
        );
        let rate = f64::from(GLOBAL_RATE);
        about(counts.ok, rate * took.as_secs_f64() + rate, share, what);
    }

    async fn admitted_by_each(&self) -> [f64; 2] {
        let series =
            r#"pilotfish_rate_limit_decisions_total{limit="users-global",decision="allowed"}"#;
        [
            metric(&self.replicas[0], series).await,
            metric(&self.replicas[1], series).await,
        ]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_one_global_limit_through_redis() {
    let redis = Redis::start();
    let mesh = Replicas::start(&redis).await;
    // Together about rate × time + burst, not twice it.
    mesh.admit_about_the_limit(4, 0.15, "admitted by both")
        .await;
    let [a, b] = mesh.admitted_by_each().await;
    assert!(a > 0.0 && b > 0.0, "both replicas served: {a} {b}");
    let replicas = r#"pilotfish_rate_limit_replicas{limit="users-global"}"#;
    assert_eq!(metric(&mesh.replicas[0], replicas).await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_each_replica_enforces_its_share_and_the_global_limit_returns_with_it() {
    let mut redis = Redis::start();
    let mesh = Replicas::start(&redis).await;
    let degraded = r#"pilotfish_rate_limit_degraded{limit="users-global"}"#;
    mesh.admit_about_the_limit(2, 0.2, "admitted before").await;

    // Redis dies: requests keep flowing, each replica at its share (half
    // the rate and burst), so together still about the limit.
    redis.kill();
    for replica in &mesh.replicas {
        wait_metric(replica, degraded, 1.0, SOON).await;
    }
    mesh.admit_about_the_limit(3, 0.2, "admitted without Redis")
        .await;
    mesh.replicas[0].wait_for_log("Redis unreachable", SOON);

    // Redis is back: the shared bucket holds again.
    redis.restart();
    for replica in &mesh.replicas {
        wait_metric_at_most(replica, degraded, 0.0, SOON).await;
    }
    mesh.admit_about_the_limit(3, 0.15, "admitted with Redis back")
        .await;
    mesh.replicas[0].wait_for_log("Redis is back", SOON);
}

/// Waits until `series` is at most `value`.
async fn wait_metric_at_most(sidecar: &Sidecar, series: &str, value: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = metric(sidecar, series).await;
        if now <= value {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is still {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_waits_for_the_retry_after_of_a_429() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .extra("rate_limits:\n  - { name: slow, direction: inbound, rate: 1, burst: 1 }\n"),
    );
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[users.inbound()],
        "      timeout: 5s\n      retries: { attempts: 2, on: [\"429\"] }\n",
    ));
    assert_eq!(statuses(&orders, 1).await, [200]);
    // The bucket is empty: users answers 429 with Retry-After: 1, and
    // orders waits that long before its retry, which then gets through.
    let started = Instant::now();
    assert_eq!(statuses(&orders, 1).await, [200]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );
    let retries = r#"pilotfish_retries_total{service="users",condition="429"}"#;
    assert_eq!(metric(&orders, retries).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_keys_from_a_header_have_their_own_buckets() {
    let pair = Pair::start_with_orders(
        "rate_limits:
  - name: per-key
    direction: outbound
    key: { header: x-api-key }
    rate: 0.1
    burst: 2
    overrides:
      - { value: premium, rate: 1000 }
",
    )
    .await;
    let orders = &pair.orders;
    let send = |key: Option<&'static str>| {
        let addr = orders.outbound();
        async move {
            let mut req = Request::get("/echo").header("host", "users");
            if let Some(key) = key {
                req = req.header("x-api-key", key);
            }
            collect(send_h1(addr, req.body(empty()).expect("request")).await)
                .await
                .status
                .as_u16()
        }
    };
    for key in [Some("alice"), Some("bob"), None] {
        let got = [send(key).await, send(key).await, send(key).await];
        assert_eq!(got, [200, 200, 429], "{key:?}: two each, then limited");
    }
    for _ in 0..10 {
        assert_eq!(send(Some("premium")).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_limit_covers_that_route_only() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr));
    let orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[users.inbound()], "")
            .routes("    - { name: search, host: api, path_prefix: /echo, service: users }\n")
            .extra("rate_limits:\n  - { name: search, direction: outbound, route: search, rate: 0.1, burst: 1 }\n"),
    );
    let status = |host: &'static str, path: &'static str| {
        let addr = orders.outbound();
        async move {
            collect(send_h1(addr, get(host, path)).await)
                .await
                .status
                .as_u16()
        }
    };
    assert_eq!(status("api", "/echo").await, 200);
    assert_eq!(status("api", "/echo/more").await, 429);
    // The same destination by its name: another route, not limited.
    for _ in 0..5 {
        assert_eq!(status("users", "/echo").await, 200);
    }
}
