//! A request crosses app -> sidecar -> mTLS -> sidecar -> app, intact:
//! method, path, query, status, headers, body and trailers, for HTTP/1.1 and
//! HTTP/2 from the app, and the far app learns who called.

use http::Request;

use crate::support::*;

const ORDERS_ID: &str = "spiffe://cluster.local/ns/default/sa/orders";

#[tokio::test(flavor = "multi_thread")]
async fn http1_request_arrives_intact_with_the_callers_identity() {
    let mesh = Pair::start().await;
    let req = Request::post("/echo?page=2&q=a%20b")
        .header("host", "users")
        .header("x-custom", "kept")
        .header("cookie", "a=1; b=2")
        // A caller must not be able to claim an identity.
        .header(
            "pilotfish-client-id",
            "spiffe://cluster.local/ns/default/sa/admin",
        )
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .body(body("hello mesh"))
        .expect("request");
    let response = collect(send_h1(mesh.orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "page=2&q=a%20b");
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "HTTP/1.1 from the app arrives as HTTP/1.1"
    );
    assert_eq!(echo["body_bytes"], 10);
    let headers = &echo["headers"];
    assert_eq!(headers["host"][0], "users");
    assert_eq!(headers["x-custom"][0], "kept");
    assert_eq!(headers["cookie"][0], "a=1; b=2");
    assert_eq!(
        headers["pilotfish-client-id"],
        serde_json::json!([ORDERS_ID])
    );
    assert!(
        headers["x-hop"].is_null(),
        "hop-by-hop field named in Connection passed"
    );
    assert!(
        headers["pilotfish-orig-proto"].is_null(),
        "internal header reached the app"
    );
    assert_eq!(headers["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(headers["forwarded"][0], "for=127.0.0.1;proto=https");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_request_arrives_as_http2_with_the_callers_identity() {
    let mesh = Pair::start().await;
    let req = Request::put("http://users/echo")
        .header("x-custom", "kept")
        .body(body("h2 body"))
        .expect("request");
    let response = collect(send_h2c(mesh.orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["body_bytes"], 7);
    assert_eq!(echo["headers"]["x-custom"][0], "kept");
    assert_eq!(echo["headers"]["pilotfish-client-id"][0], ORDERS_ID);
    assert_eq!(mesh.app.last().version, http::Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_requests_work_like_an_http_proxy() {
    let mesh = Pair::start().await;
    // What curl sends with HTTP_PROXY set: the whole URL on the request line.
    let req = Request::get("http://users.default.svc.cluster.local:8080/echo")
        .header("host", "users.default.svc.cluster.local:8080")
        .body(empty())
        .expect("request");
    let response = collect(send_h1(mesh.orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["headers"]["host"][0],
        "users.default.svc.cluster.local:8080"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_response_headers_pass_unchanged() {
    let mesh = Pair::start().await;
    let response =
        collect(send_h1(mesh.orders.outbound(), get("users", "/status/418")).await).await;
    assert_eq!(response.status, 418);
    assert_eq!(response.text(), "status 418\n");
    assert_eq!(
        response.header("pilotfish-error"),
        None,
        "the app's error is not ours"
    );

    let response = collect(send_h1(mesh.orders.outbound(), get("users", "/mirror")).await).await;
    assert_eq!(response.header("x-mirrored"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn trailers_arrive_over_http1_and_http2() {
    let mesh = Pair::start().await;
    let mut req = get("users", "/trailers");
    req.headers_mut()
        .insert("te", "trailers".parse().expect("value"));
    let response = collect(send_h1(mesh.orders.outbound(), req).await).await;
    assert_eq!(response.text(), "body before trailers\n");
    let trailers = response.trailers.expect("HTTP/1.1 trailers");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(trailers["grpc-status"], "0");

    let req = Request::get("http://users/trailers")
        .header("te", "trailers")
        .body(empty())
        .expect("request");
    let response = collect(send_h2c(mesh.orders.outbound(), req).await).await;
    assert_eq!(response.text(), "body before trailers\n");
    let trailers = response.trailers.expect("HTTP/2 trailers");
    assert_eq!(trailers["x-checksum"], "abc123");
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_trailers_reach_the_app_over_http2() {
    let mesh = Pair::start().await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-request-trailer", "sent".parse().expect("value"));
    let body = frames_body(vec![
        hyper::body::Frame::data(bytes::Bytes::from_static(b"abc")),
        hyper::body::Frame::trailers(trailers),
    ]);
    let req = Request::post("http://users/mirror")
        .header("te", "trailers")
        .body(body)
        .expect("request");
    let response = collect(send_h2c(mesh.orders.outbound(), req).await).await;
    assert_eq!(response.text(), "abc");
    let trailers = response.trailers.expect("mirrored trailers");
    assert_eq!(trailers["x-request-trailer"], "sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_destination_outside_the_mesh_is_reached_directly() {
    let certs = Certs::new();
    let legacy = TestApp::start().await;
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "legacy",
        &[legacy.addr],
        "      transport: plaintext\n",
    ));
    let req = Request::get("/echo")
        .header("host", "legacy:8080")
        .body(empty())
        .expect("request");
    let response = collect(send_h1(orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"][0], "legacy:8080");
    assert!(
        echo["headers"]["pilotfish-client-id"].is_null(),
        "no identity outside the mesh"
    );

    // protocol: auto keeps the app's HTTP/2.
    let req = Request::get("http://legacy/echo")
        .body(empty())
        .expect("request");
    let response = collect(send_h2c(orders.outbound(), req).await).await;
    assert_eq!(response.json()["version"], "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_destination_can_be_pinned_to_http1() {
    let certs = Certs::new();
    let legacy = TestApp::start().await;
    let orders = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "legacy",
        &[legacy.addr],
        "      transport: plaintext\n      protocol: http1\n",
    ));
    let req = Request::get("http://legacy/echo")
        .body(empty())
        .expect("request");
    let response = collect(send_h2c(orders.outbound(), req).await).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let echo = response.json();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"][0], "legacy");
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_routes_send_a_host_and_path_prefix_to_a_service() {
    let certs = Certs::new();
    let users_app = TestApp::start().await;
    let other_app = TestApp::start().await;
    let users = Sidecar::start(&SidecarConfig::new("users", &certs).inbound(users_app.addr));
    let orders = Sidecar::start(
        &SidecarConfig::new("orders", &certs)
            .service("users", &[users.inbound()], "")
            .service("other", &[other_app.addr], "      transport: plaintext\n")
            .routes(
                "    - host: api.example\n      path_prefix: /users\n      service: users\n    \
                 - host: api.example\n      service: other\n",
            ),
    );
    let response = collect(send_h1(orders.outbound(), get("api.example", "/users/7")).await).await;
    assert_eq!(response.status, 404, "the test app has no /users route");
    assert_eq!(users_app.last().path, "/users/7");
    let response = collect(send_h1(orders.outbound(), get("API.example", "/usersx")).await).await;
    assert_eq!(response.status, 404);
    assert_eq!(other_app.last().path, "/usersx");
}
