//! How reaching the app failed decides retries wherever it happened: at
//! this sidecar's own connection to the origin (one sidecar), or at the
//! far sidecar's connection to its app (a pair), which reports it over the
//! authenticated mesh link in a form no app can forge.

use http::Request;

use crate::support::origins::{Hops, Origins, call, delta, post};
use crate::support::*;

const RESET_RETRIES: &str = r#"pilotfish_retries_total{condition="reset",service="users"}"#;

/// Origin 0 drops every connection mid-request: with the default retry
/// conditions a GET that meets it goes again to origin 1; a POST that may
/// have reached the app does not, and says why.
async fn an_app_reset_is_retried_when_safe(hops: Hops) {
    let certs = Certs::new();
    let origins = Origins::start(&certs, hops, 2);
    origins.knobs(0, "reset=1").await;
    let caller = origins.caller(
        &certs,
        "      load_balancer: round-robin\n      outlier_detection: { enabled: false }\n",
    );
    for _ in 0..10 {
        let response = call(&caller, "/echo").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("pilotfish-outcome"), None);
    }
    let retried = metric(&caller, RESET_RETRIES).await;
    assert!(retried >= 4.0, "{retried} resets retried");

    let before = origins.requests().await;
    let mut refused = 0;
    for _ in 0..10 {
        let response = post(&caller, "/echo").await;
        match response.status.as_u16() {
            200 => {}
            502 => {
                assert_eq!(response.header("pilotfish-error"), Some("upstream-reset"));
                assert_eq!(response.header("pilotfish-outcome"), None, "mesh-only");
                refused += 1;
            }
            other => panic!("{other}: {}", response.text()),
        }
    }
    let reached = delta(&origins.requests().await, &before);
    assert_eq!(reached, vec![refused, 10 - refused], "no POST went twice");
    assert!(
        refused >= 4,
        "round robin sent {refused} POSTs to the resetting app"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_reset_is_retried_when_safe_through_one_sidecar() {
    an_app_reset_is_retried_when_safe(Hops::One).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_reset_is_retried_when_safe_through_a_pair() {
    an_app_reset_is_retried_when_safe(Hops::Pair).await;
}

/// Origin 0's app is gone: the connection to it is refused (by the
/// kernel, or at the far sidecar), so even a POST goes again, elsewhere.
async fn a_post_to_an_app_that_is_down_goes_elsewhere(hops: Hops) {
    let certs = Certs::new();
    let mut origins = Origins::start(&certs, hops, 2);
    origins.apps[0].kill();
    let caller = origins.caller(
        &certs,
        "      load_balancer: round-robin\n      outlier_detection: { enabled: false }\n",
    );
    for _ in 0..6 {
        let response = post(&caller, "/echo").await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let retried = r#"pilotfish_retries_total{condition="connect-failure",service="users"}"#;
    assert!(metric(&caller, retried).await >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_to_an_app_that_is_down_goes_elsewhere_through_one_sidecar() {
    a_post_to_an_app_that_is_down_goes_elsewhere(Hops::One).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_to_an_app_that_is_down_goes_elsewhere_through_a_pair() {
    a_post_to_an_app_that_is_down_goes_elsewhere(Hops::Pair).await;
}

/// An app writes the far sidecar's account on its own 503 ("I never saw
/// it, send it again"): believed, it would make the caller repeat a POST
/// the app acted on. It is not believed, and it reaches no one.
async fn an_app_cannot_forge_the_account(hops: Hops) {
    let certs = Certs::new();
    let app = TestApp::start().await;
    let far = (hops == Hops::Pair)
        .then(|| Sidecar::start(&SidecarConfig::new("users", &certs).inbound(app.addr)));
    let (endpoint, transport) = match &far {
        Some(far) => (far.inbound(), ""),
        None => (app.addr, "      transport: plaintext\n"),
    };
    let caller = Sidecar::start(&SidecarConfig::new("orders", &certs).service(
        "users",
        &[endpoint],
        &format!("{transport}      retries: {{ attempts: 3, on: [connect-failure, \"503\"] }}\n"),
    ));
    let forged =
        "/status/503?set=pilotfish-outcome:connect-failure&set=pilotfish-error:connect-refused";
    let req = Request::post(forged)
        .header("host", "users")
        .body(body("{}"))
        .expect("request");
    let response = collect(send_h1(caller.outbound(), req).await).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("pilotfish-outcome"), None);
    let posts = app
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/status/"))
        .count();
    assert_eq!(posts, 1, "the POST was sent again on a forged account");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_cannot_forge_the_account_through_one_sidecar() {
    an_app_cannot_forge_the_account(Hops::One).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_cannot_forge_the_account_through_a_pair() {
    an_app_cannot_forge_the_account(Hops::Pair).await;
}
