//! Access logs from real sidecars: one JSON line per request on stdout,
//! with every documented field, and the correlation id of a user request
//! in the lines of every sidecar on its path.

use std::time::Duration;

use http::Request;
use serde_json::Value;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// The fields of an access log line, as the README documents them.
const FIELDS: [&str; 24] = [
    "timestamp",
    "direction",
    "service",
    "route",
    "method",
    "authority",
    "path",
    "protocol",
    "status",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "upstream",
    "attempts",
    "peer",
    "client",
    "user",
    "trace_id",
    "span_id",
    "sampled",
    "request_id",
    "correlation_id",
    "user_agent",
    "error",
];

fn is_hex(value: &Value, len: usize) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn order(correlation: Option<&str>) -> Request<TestBody> {
    let mut req = Request::get("/orders/3").header("host", "orders");
    if let Some(id) = correlation {
        req = req.header("x-correlation-id", id);
    }
    req.body(empty()).expect("request")
}

/// Lines each sidecar writes for one order: the client's call; orders'
/// inbound request and its calls to users and notifications; one each
/// at users and notifications.
const LINES_PER_ORDER: [usize; 4] = [1, 3, 1, 1];

#[tokio::test(flavor = "multi_thread")]
async fn one_correlation_id_in_every_line_of_every_sidecar_on_the_path() {
    let mesh = Mesh::start("access_log:\n  format: json\n");

    // Sent by the client: kept all along and returned.
    let response =
        collect(send_h1(mesh.client.outbound(), order(Some("order-flow-42"))).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-correlation-id"), Some("order-flow-42"));
    let request_id = response
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
    for ((name, sidecar), count) in mesh.sidecars().into_iter().zip(LINES_PER_ORDER) {
        let lines = sidecar.wait_access_log(count, WAIT);
        assert_eq!(lines.len(), count, "{name}: {lines:#?}");
        for line in &lines {
            assert_eq!(line["correlation_id"], "order-flow-42", "{name}: {line}");
            assert_eq!(line["request_id"], request_id.as_str(), "{name}: {line}");
        }
    }

    // Not sent: made up at the first sidecar, then the same everywhere.
    let response = collect(send_h1(mesh.client.outbound(), order(None)).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let made = response
        .header("x-correlation-id")
        .expect("a correlation id is returned")
        .to_owned();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    for ((name, sidecar), count) in mesh.sidecars().into_iter().zip(LINES_PER_ORDER) {
        let lines = sidecar.wait_access_log(2 * count, WAIT);
        for line in &lines[count..] {
            assert_eq!(line["correlation_id"], made.as_str(), "{name}: {line}");
        }
    }

    // The trace ties them together too.
    let trace = mesh.client.access_log()[1]["trace_id"].clone();
    for (name, sidecar) in mesh.sidecars() {
        let last = sidecar.access_log().last().cloned().expect("a line");
        assert_eq!(last["trace_id"], trace, "{name}: {last}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_carry_every_documented_field() {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let json = "access_log:\n  format: json\n";
    let users = Sidecar::start(
        &SidecarConfig::new("users", &certs)
            .inbound(app.addr)
            .extra(json),
    );
    let orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[users.inbound()], "")
            .extra(json),
    );

    let req = Request::post("/echo?token=secret")
        .header("host", "users")
        .header("user-agent", "access-log-test/1")
        .body(body("hello world"))
        .expect("request");
    let response = collect(send_h1(orders.outbound(), req).await).await;
    assert_eq!(response.status, 200);

    let out = &orders.wait_access_log(1, WAIT)[0];
    let inb = &users.wait_access_log(1, WAIT)[0];
    for line in [out, inb] {
        let keys: Vec<&str> = line
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        let mut have = keys.clone();
        have.sort_unstable();
        assert_eq!(have, want, "{line}");
        assert!(
            line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert_eq!(line["method"], "POST");
        assert_eq!(line["authority"], "users");
        assert_eq!(line["path"], "/echo", "no query string: {line}");
        assert_eq!(line["status"], 200);
        assert!(
            line["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
            "{line}"
        );
        assert_eq!(line["bytes_in"], 11, "{line}");
        assert_eq!(line["bytes_out"], response.body.len(), "{line}");
        assert_eq!(line["attempts"], 1);
        assert!(is_hex(&line["trace_id"], 32), "{line}");
        assert!(is_hex(&line["span_id"], 16), "{line}");
        assert!(line["sampled"].is_boolean(), "{line}");
        assert_eq!(line["user_agent"], "access-log-test/1");
        assert!(line["error"].is_null(), "{line}");
        assert_eq!(
            line["request_id"],
            response.header("x-request-id").expect("id")
        );
    }
    assert_eq!(out["direction"], "outbound");
    assert_eq!(out["service"], "users");
    assert_eq!(out["route"], "default");
    assert_eq!(out["protocol"], "HTTP/1.1");
    assert_eq!(out["upstream"], users.inbound().to_string());
    assert!(out["peer"].is_null());
    assert_eq!(inb["direction"], "inbound");
    assert_eq!(inb["service"], "users");
    assert_eq!(inb["protocol"], "HTTP/2.0", "the mesh link");
    assert_eq!(inb["upstream"], app.addr.to_string());
    assert_eq!(inb["peer"], "spiffe://cluster.local/ns/default/sa/orders");
    assert_eq!(inb["trace_id"], out["trace_id"]);
    assert_ne!(inb["span_id"], out["span_id"]);
    assert_eq!(inb["sampled"], out["sampled"]);

    // A request the proxy fails carries its reason.
    let response = collect(send_h1(orders.outbound(), get("nowhere", "/")).await).await;
    assert_eq!(response.status, 503);
    let failed = &orders.wait_access_log(2, WAIT)[1];
    assert_eq!(failed["error"], "no-route", "{failed}");
    assert_eq!(failed["status"], 503);
    assert!(
        failed["service"].is_null() && failed["upstream"].is_null(),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_text_format_reads_left_to_right() {
    let pair = Pair::start_with_orders("access_log:\n  format: text\n").await;
    let (users, orders) = (&pair.users, &pair.orders);
    let response = collect(send_h1(orders.outbound(), get("users", "/echo")).await).await;
    assert_eq!(response.status, 200);
    let deadline = std::time::Instant::now() + WAIT;
    while orders.stdout().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = orders.stdout().first().cloned().expect("a line");
    let fields: Vec<&str> = line.split(' ').collect();
    assert!(fields[0].ends_with('Z'), "{line}");
    assert_eq!(
        fields[1..8],
        [
            "outbound", "users", "GET", "users", "/echo", "HTTP/1.1", "200"
        ],
        "{line}"
    );
    let correlation = response.header("x-correlation-id").expect("id");
    assert!(
        line.contains(&format!("correlation_id={correlation}")),
        "{line}"
    );
    assert!(line.ends_with("error=-"), "{line}");
    assert!(
        users.stdout().is_empty(),
        "users has no access log configured"
    );
}
