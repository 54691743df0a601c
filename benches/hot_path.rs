//! Micro-benchmarks of the pieces every request goes through, to compare
//! changes without a full load run (`benches/peers.sh` is the real
//! measure):
//!
//!   cargo bench --bench hot_path
//!   cargo bench --bench hot_path -- route    # one group

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Request};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

use pilotfish::config::parse_str;
use pilotfish::http::headers::strip_hop_by_hop;
use pilotfish::http::request_id::RequestIdHeaders;
use pilotfish::identity::SpiffeId;
use pilotfish::inbound::Policy;
use pilotfish::ratelimit::bucket::{Bucket, Rate};
use pilotfish::ratelimit::keyed::KeyedBuckets;
use pilotfish::routing::{RouteTable, Target};
use pilotfish::trace::propagation::{self, Format};

/// A sidecar with a dozen destinations and routes, as a mid-sized
/// service has.
const CONFIG: &str = r#"
service: orders
tls: { ca: ca.pem, cert: orders.pem, key: orders-key.pem }
inbound:
  app: 127.0.0.1:8080
  authorization:
    default: deny
    rules:
      - { name: web, from: [{ service: web }], paths: ["/orders/*"], methods: [GET] }
      - { name: admin, from: [{ service: admin }], paths: ["/*"] }
      - { name: batch, from: [{ namespace: batch }], paths: ["/orders/*", "/reports/*"], methods: [GET, POST] }
outbound:
  services:
    users: { endpoints: [127.0.0.1:9001] }
    payments: { endpoints: [127.0.0.1:9002] }
    inventory: { endpoints: [127.0.0.1:9003] }
    shipping: { endpoints: [127.0.0.1:9004] }
    notifications: { endpoints: [127.0.0.1:9005] }
    search: { endpoints: [127.0.0.1:9006] }
    pricing: { endpoints: [127.0.0.1:9007] }
    reviews: { endpoints: [127.0.0.1:9008] }
  routes:
    - { host: api.internal, path_prefix: /users, service: users }
    - { host: api.internal, path_prefix: /payments, service: payments }
    - { host: api.internal, path_prefix: /inventory, service: inventory }
    - { host: api.internal, path_prefix: /search, service: search }
    - { host: "*", service: reviews }
"#;

/// The headers a typical app request carries.
fn app_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "users"),
        ("user-agent", "orders/1.4 (reqwest)"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("connection", "keep-alive"),
        ("content-type", "application/json"),
        ("x-request-id", "9b2f0c5e-8f7a-4e61-9d0b-2b1f4a6c7e3d"),
        ("x-correlation-id", "checkout-7781"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "authorization",
            "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

fn route(c: &mut Criterion) {
    let config = parse_str(CONFIG, Path::new("bench.yaml")).expect("config");
    let outbound = config.outbound.as_ref().expect("outbound");
    let services: Vec<(&str, &str)> = outbound
        .services
        .iter()
        .map(|(name, dst)| (name.as_str(), dst.namespace.as_deref().unwrap_or("default")))
        .collect();
    let table = RouteTable::build(&outbound.routes, &services, true);
    let mut group = c.benchmark_group("route");
    for (name, host, path) in [
        ("by-service-name", "users", "/users/7"),
        ("by-host-and-prefix", "api.internal", "/payments/42/refunds"),
        ("catch-all", "legacy.example.com", "/anything"),
    ] {
        let req = Request::get(path)
            .header("host", host)
            .body(())
            .expect("req");
        group.bench_function(name, |b| {
            b.iter(|| {
                let target = Target::of(black_box(&req)).expect("target");
                black_box(table.find(Some(&target), &req))
            });
        });
    }
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let template = app_headers();
    group.bench_function("strip-hop-by-hop", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| strip_hop_by_hop(black_box(headers)),
            criterion::BatchSize::SmallInput,
        );
    });
    let ids = RequestIdHeaders::default();
    group.bench_function("request-ids-kept", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| black_box(ids.ensure(headers)),
            criterion::BatchSize::SmallInput,
        );
    });
    let mut bare = template.clone();
    bare.remove("x-request-id");
    bare.remove("x-correlation-id");
    group.bench_function("request-ids-made", |b| {
        b.iter_batched_ref(
            || bare.clone(),
            |headers| black_box(ids.ensure(headers)),
            criterion::BatchSize::SmallInput,
        );
    });
    group.bench_function("traceparent-extract", |b| {
        b.iter(|| black_box(propagation::extract(black_box(&template), &[Format::W3c])));
    });
    let span = SpanContext::new(
        TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
        SpanId::from(0x00f0_67aa_0ba9_02b7),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    );
    group.bench_function("traceparent-inject", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |headers| propagation::inject(headers, black_box(&span), &[Format::W3c]),
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    let config = parse_str(CONFIG, Path::new("bench.yaml")).expect("config");
    let inbound = config.inbound.as_ref().expect("inbound");
    let authz =
        Policy::new(inbound.authorization.as_ref(), "cluster.local", "default").expect("policy");
    let caller = SpiffeId::parse("spiffe://cluster.local/ns/batch/sa/nightly").expect("id");
    group.bench_function("authorization-third-rule", |b| {
        b.iter(|| black_box(authz.decide(&caller, &Method::POST, "/reports/2026/11")));
    });
    let rate = Rate::new(1e9, Some(1_000_000));
    let mut bucket = Bucket::full(rate, tokio::time::Instant::now());
    group.bench_function("token-bucket", |b| {
        b.iter(|| black_box(bucket.take(rate, tokio::time::Instant::now())));
    });
    let keyed = KeyedBuckets::new(100_000);
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("spiffe://cluster.local/ns/default/sa/caller-{i}"))
        .collect();
    let mut i = 0;
    group.bench_function("token-bucket-per-caller", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(keyed.take(&keys[i], rate, tokio::time::Instant::now()))
        });
    });
    group.finish();
}

criterion_group!(benches, route, headers, policy);
criterion_main!(benches);
