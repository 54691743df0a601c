//! `http::outcome::Outcome::from_peer`: the far sidecar's account of how
//! reaching its app failed (`pilotfish-outcome`), read from a mesh
//! response, and how the attempt is then classified.
//!
//! Input: a status code on the first line (502 if none), then the
//! response's header block.

use http::{Response, StatusCode};
use pilotfish::http::Body;
use pilotfish::http::outcome::{Failure, OUTCOME_HEADER, Outcome, PeerOutcome};

use super::input::{header_map, split_first_line};

/// Checks one input.
pub fn run(data: &[u8]) {
    let (first, block) = split_first_line(data);
    let status = StatusCode::from_bytes(first).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = header_map(block);
    let sent = headers.get(OUTCOME_HEADER).cloned();

    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    *response.headers_mut() = headers.clone();
    Outcome::from_peer(&mut response);

    assert!(!response.headers().contains_key(OUTCOME_HEADER), "left in");
    for name in headers.keys() {
        if *name != OUTCOME_HEADER {
            assert!(
                headers
                    .get_all(name)
                    .iter()
                    .eq(response.headers().get_all(name).iter()),
                "{name} changed"
            );
        }
    }
    let known = [
        Failure::ConnectFailure,
        Failure::RefusedStream,
        Failure::Reset,
        Failure::Timeout,
    ];
    let want = sent.and_then(|v| {
        known
            .into_iter()
            .find(|f| v.as_bytes() == f.as_str().as_bytes())
    });
    let got = response.extensions().get::<PeerOutcome>().map(|p| p.0);
    assert_eq!(got, want, "the account read");

    let outcome = Outcome::of(&Ok(response));
    match want {
        Some(failure) => assert_eq!(
            outcome,
            Outcome::PeerFailed {
                failure,
                status: status.as_u16()
            }
        ),
        None => assert_eq!(outcome, Outcome::of_response(status, &headers)),
    }
    assert_eq!(outcome.status(), Some(status.as_u16()));
    // What a sidecar says of its own failure reads back the same.
    for failure in known {
        let mut response = Response::new(Body::Empty);
        let value = Outcome::Failed(failure)
            .for_peer()
            .expect("a failure has an account");
        response.headers_mut().insert(OUTCOME_HEADER, value);
        Outcome::from_peer(&mut response);
        assert_eq!(
            response.extensions().get::<PeerOutcome>(),
            Some(&PeerOutcome(failure))
        );
    }
}
