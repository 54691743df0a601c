//! Distributed tracing through real sidecars: spans exported over OTLP to
//! a receiver in the test, trace context continued, created and bridged
//! between W3C and B3, and a collector that is down.

use std::collections::HashMap;
use std::time::Duration;

use http::Request;

use crate::support::otlp::{OtlpReceiver, Protocol, ReceivedSpan, SpanKind};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Top-level YAML: every trace sampled, spans to `receiver`, sent fast.
fn exporting_to(receiver: &OtlpReceiver, protocol: &str) -> String {
    format!(
        "tracing:\n  sample_ratio: 1.0\n  otlp:\n    endpoint: {}\n    protocol: {protocol}\n    flush_interval: 50ms\n",
        receiver.endpoint()
    )
}

fn by_id(spans: &[ReceivedSpan]) -> HashMap<&str, &ReceivedSpan> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

fn parent_of<'a>(span: &ReceivedSpan, index: &HashMap<&str, &'a ReceivedSpan>) -> &'a ReceivedSpan {
    let parent = span.parent_span_id.as_deref().expect("has a parent");
    index
        .get(parent)
        .unwrap_or_else(|| panic!("the parent of {span:?} was not exported"))
}

fn identity(service: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{service}")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_through_the_mesh_is_one_trace() {
    let receiver = OtlpReceiver::start(Protocol::Grpc).await;
    let mesh = Mesh::start(&exporting_to(&receiver, "grpc"));

    let response = collect(send_h1(mesh.client.outbound(), get("orders", "/orders/7")).await).await;
    assert_eq!(response.status, 200, "{}", response.text());

    // client: request + attempt; orders: server, and request + attempt
    // to users and to notifications; users and notifications: server.
    let spans = receiver.wait_for(WAIT, |spans| spans.len() >= 9).await;
    assert_eq!(spans.len(), 9, "{spans:#?}");
    let trace = &spans[0].trace_id;
    assert!(spans.iter().all(|s| &s.trace_id == trace), "{spans:#?}");
    assert!(trace.len() == 32 && trace != &"0".repeat(32));
    let index = by_id(&spans);

    // One root: the client sidecar's span for the request.
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    let root = roots[0];
    assert_eq!(
        (root.service_name.as_str(), root.kind),
        ("client", SpanKind::Client)
    );
    assert_eq!(root.attr_str("pilotfish.service"), Some("orders"));
    assert_eq!(root.attr_str("pilotfish.route"), Some("default"));
    assert_eq!(root.attr_int("pilotfish.retries"), Some(0));
    assert_eq!(root.attr_int("http.response.status_code"), Some(200));

    // Every server span hangs under the attempt span that reached it, in
    // the calling sidecar, and every attempt reached exactly one server.
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(servers.len(), 3, "{spans:#?}");
    for server in &servers {
        let attempt = parent_of(server, &index);
        assert_eq!(
            attempt.kind,
            SpanKind::Client,
            "{server:?} under {attempt:?}"
        );
        assert_eq!(
            attempt.attr_int("pilotfish.attempt"),
            Some(1),
            "{attempt:?}"
        );
        let caller = &attempt.service_name;
        assert_ne!(caller, &server.service_name);
        assert_eq!(
            server.attr_str("pilotfish.peer.identity"),
            Some(identity(caller).as_str()),
            "{server:?}"
        );
        let status = server.attr_int("http.response.status_code");
        assert!(matches!(status, Some(200..=299)), "{server:?}");
        assert!(server.attr_str("url.path").is_some(), "{server:?}");
        let request = parent_of(attempt, &index);
        assert_eq!(
            (request.service_name.as_str(), request.kind),
            (caller.as_str(), SpanKind::Client)
        );
        assert_eq!(
            request.attr_str("pilotfish.service"),
            Some(server.service_name.as_str())
        );
    }
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.attr_int("pilotfish.attempt").is_some())
        .collect();
    assert_eq!(attempts.len(), 3, "{spans:#?}");
    for attempt in attempts {
        let children = spans
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == Some(attempt.span_id.as_str()))
            .count();
        assert_eq!(children, 1, "{attempt:?}");
    }

    // orders' calls are children of its server span: the app copied the
    // headers, the sidecar did the rest.
    let orders_server = servers
        .iter()
        .find(|s| s.service_name == "orders")
        .expect("orders' server span");
    assert_eq!(orders_server.attr_str("url.path"), Some("/orders/7"));
    let orders_requests: Vec<_> = spans
        .iter()
        .filter(|s| s.service_name == "orders" && s.kind == SpanKind::Client)
        .filter(|s| s.attr_int("pilotfish.attempt").is_none())
        .collect();
    assert_eq!(orders_requests.len(), 2, "{spans:#?}");
    for request in orders_requests {
        assert_eq!(
            request.parent_span_id.as_deref(),
            Some(orders_server.span_id.as_str()),
            "{request:?}"
        );
    }
    let users = servers
        .iter()
        .find(|s| s.service_name == "users")
        .expect("users");
    assert_eq!(users.name, "GET");
    let notifications = servers
        .iter()
        .find(|s| s.service_name == "notifications")
        .expect("notifications");
    assert_eq!(notifications.name, "POST");
}

/// users app <- users sidecar <= orders sidecar, both exporting.
struct TracedPair {
    app: TestApp,
    _users: Sidecar,
    orders: Sidecar,
    _certs: Certs,
}

impl TracedPair {
    async fn start(extra: &str, users_destination: &str) -> Self {
        let certs = Certs::new();
        let app = TestApp::start().await;
        let users = Sidecar::start(
            &SidecarConfig::new("users", &certs)
                .inbound(app.addr)
                .extra(extra),
        );
        let orders = Sidecar::start(
            &SidecarConfig::new("orders", &certs)
                .service("users", &[users.inbound()], users_destination)
                .extra(extra),
        );
        Self {
            app,
            _users: users,
            orders,
            _certs: certs,
        }
    }

    async fn send(&self, path: &str, headers: &[(&str, &str)]) -> Collected {
        let mut req = Request::get(path).header("host", "users");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        collect(send_h1(self.orders.outbound(), req.body(empty()).expect("request")).await).await
    }

    /// The trace headers the app received with its last request.
    fn app_saw(&self, name: &str) -> Option<String> {
        self.app
            .last()
            .headers
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }
}

/// `traceparent` split into (trace id, parent id, flags).
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incoming_traceparent_is_continued_and_a_missing_one_created() {
    let receiver = OtlpReceiver::start(Protocol::Http).await;
    let pair = TracedPair::start(&exporting_to(&receiver, "http"), "").await;

    // Continued: same trace, a new parent id at every hop, tracestate kept.
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = pair
        .send(
            "/echo",
            &[("traceparent", incoming), ("tracestate", "vendor=opaque")],
        )
        .await;
    assert_eq!(response.status, 200);
    let (trace, parent, flags) = traceparent(&pair.app_saw("traceparent").expect("traceparent"));
    assert_eq!(trace, "0af7651916cd43dd8448eb211c80319c");
    assert_ne!(parent, "b7ad6b7169203331");
    assert_eq!(flags, "01");
    assert_eq!(pair.app_saw("tracestate").as_deref(), Some("vendor=opaque"));
    let spans = receiver
        .wait_for(WAIT, |spans| {
            spans.iter().filter(|s| s.trace_id == trace).count() >= 3
        })
        .await;
    let spans: Vec<_> = spans.into_iter().filter(|s| s.trace_id == trace).collect();
    let request = spans
        .iter()
        .find(|s| s.service_name == "orders" && s.attr_int("pilotfish.attempt").is_none())
        .expect("orders' span");
    assert_eq!(request.parent_span_id.as_deref(), Some("b7ad6b7169203331"));
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .expect("users' server span");
    assert_eq!(
        server.span_id, parent,
        "the app's parent is users' server span"
    );

    // Created: a new trace, sampled (ratio 1), that the spans share.
    pair.send("/echo", &[]).await;
    let (created, _, flags) = traceparent(&pair.app_saw("traceparent").expect("traceparent"));
    assert_ne!(created, trace);
    assert_ne!(created, "0".repeat(32));
    assert_eq!(flags, "01");
    receiver
        .wait_for(WAIT, |spans| {
            spans.iter().filter(|s| s.trace_id == created).count() >= 3
        })
        .await;

    // A caller's "not sampled" is followed: propagated, never exported.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    pair.send("/echo", &[("traceparent", unsampled)]).await;
    let (trace, _, flags) = traceparent(&pair.app_saw("traceparent").expect("traceparent"));
    assert_eq!(
        (trace.as_str(), flags.as_str()),
        ("11111111111111111111111111111111", "00")
    );
    // A sampled request after it: once its spans are in, the unsampled
    // one's would have been too.
    pair.send("/echo", &[]).await;
    let (last, _, _) = traceparent(&pair.app_saw("traceparent").expect("traceparent"));
    let spans = receiver
        .wait_for(WAIT, |spans| {
            spans.iter().filter(|s| s.trace_id == last).count() >= 3
        })
        .await;
    assert!(
        spans.iter().all(|s| s.trace_id != trace),
        "an unsampled trace was exported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_request_has_a_span_per_attempt() {
    let receiver = OtlpReceiver::start(Protocol::Grpc).await;
    let pair = TracedPair::start(
        &exporting_to(&receiver, "grpc"),
        "      retries: { attempts: 2, on: [\"503\"] }\n      outlier_detection: { enabled: false }\n",
    )
    .await;
    let response = pair.send("/status/503", &[]).await;
    assert_eq!(response.status, 503);
    let spans = receiver.wait_for(WAIT, |spans| spans.len() >= 5).await;
    let index = by_id(&spans);
    let request = spans
        .iter()
        .find(|s| s.parent_span_id.is_none())
        .expect("the request's span");
    assert_eq!(request.attr_int("pilotfish.retries"), Some(1));
    assert!(request.status_error, "{request:?}");
    let mut attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.attr_int("pilotfish.attempt").is_some())
        .collect();
    attempts.sort_by_key(|s| s.attr_int("pilotfish.attempt"));
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(parent_of(attempt, &index).span_id, request.span_id);
        assert_eq!(attempt.attr_int("http.response.status_code"), Some(503));
        assert!(attempt.status_error);
        let resends = attempt.attr_int("http.request.resend_count");
        assert_eq!(resends, (n > 0).then_some(n as i64), "{attempt:?}");
        // Each attempt reached the far sidecar: its own server span.
        let servers = spans
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == Some(attempt.span_id.as_str()))
            .filter(|s| s.kind == SpanKind::Server)
            .count();
        assert_eq!(servers, 1, "{attempt:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn b3_in_is_b3_out_and_bridged_to_w3c() {
    // No collector: propagation works without one.
    let pair = TracedPair::start(
        "tracing:\n  propagation: [b3multi, w3c]\n  sample_ratio: 0\n",
        "",
    )
    .await;
    pair.send(
        "/echo",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let trace = pair.app_saw("x-b3-traceid").expect("x-b3-traceid");
    assert_eq!(
        trace, "463ac35c9f6413ad",
        "a 64-bit id goes back as it came"
    );
    let span = pair.app_saw("x-b3-spanid").expect("x-b3-spanid");
    assert_ne!(span, "a2fb4a1d1a96d312");
    assert_eq!(pair.app_saw("x-b3-sampled").as_deref(), Some("1"));
    // The same trace, for a W3C callee.
    let (w3c_trace, w3c_parent, flags) =
        traceparent(&pair.app_saw("traceparent").expect("traceparent"));
    assert_eq!(w3c_trace, "0000000000000000463ac35c9f6413ad");
    assert_eq!((w3c_parent, flags.as_str()), (span, "01"));

    // The single-header form, and a W3C caller seen by a B3 callee.
    let single = TracedPair::start("tracing:\n  propagation: [w3c, b3]\n", "").await;
    single
        .send(
            "/echo",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
        )
        .await;
    let b3 = single.app_saw("b3").expect("b3");
    let fields: Vec<&str> = b3.split('-').collect();
    assert_eq!(fields[0], "4bf92f3577b34da6a3ce929d0e0e4736", "{b3}");
    assert_eq!(fields[2], "1", "{b3}");
    let (_, parent, _) = traceparent(&single.app_saw("traceparent").expect("traceparent"));
    assert_eq!(fields[1], parent, "{b3}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_succeed_and_spans_are_counted_as_dropped_when_the_collector_is_down() {
    // A port nothing listens on.
    let collector = free_addr();
    let extra = format!(
        "tracing:\n  sample_ratio: 1.0\n  otlp:\n    endpoint: http://{collector}\n    flush_interval: 50ms\n    timeout: 1s\n"
    );
    let pair = TracedPair::start(&extra, "").await;
    for _ in 0..20 {
        assert_eq!(pair.send("/echo", &[]).await.status, 200);
    }
    for sidecar in [&pair.orders, &pair._users] {
        wait_metric(
            sidecar,
            r#"pilotfish_spans_dropped_total{reason="export_failed"}"#,
            1.0,
            WAIT,
        )
        .await;
        assert_eq!(metric(sidecar, "pilotfish_spans_exported_total").await, 0.0);
    }
    pair.orders
        .wait_for_log("cannot export spans", Duration::from_secs(5));
}
