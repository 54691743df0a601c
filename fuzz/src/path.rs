//! `http::path::normalize` and `normalize_request`: the path that routes,
//! authorization rules and the app all judge.
//!
//! Input: the request target, as it would come on the request line (a path
//! and maybe a query); every line is tried.

use std::borrow::Cow;

use http::Request;
use http::uri::{PathAndQuery, Uri};
use pilotfish::http::path::{normalize, normalize_request};

/// Checks one input.
pub fn run(data: &[u8]) {
    for line in super::input::lines(data) {
        if let Some(text) = super::input::text(line) {
            // Anything at all: no panic.
            let _ = normalize(text);
            if text.starts_with('/') {
                check_path(text);
            }
        }
        // What a server would hand over: a request target it accepted.
        // Origin form, as a server accepts it (not `*`, not empty).
        if line.first() == Some(&b'/') {
            if let Ok(pq) = PathAndQuery::try_from(line) {
                check_path(pq.path());
                check_request(&pq);
            }
        }
    }
}

/// The invariants of a normal form, for an absolute path.
fn check_path(path: &str) {
    let Some(normal) = normalize(path) else {
        // Refused: only for a `%` that starts no escape.
        assert!(
            stray_percent(path),
            "{path:?} refused though every % starts an escape"
        );
        return;
    };
    match &normal {
        Cow::Borrowed(b) => assert_eq!(*b, path, "borrowed but changed"),
        Cow::Owned(o) => assert_ne!(o, path, "owned but unchanged"),
    }
    assert!(
        normal.starts_with('/'),
        "{path:?} -> {normal:?}: not absolute"
    );
    for segment in normal.split('/') {
        assert!(
            segment != "." && segment != "..",
            "{path:?} -> {normal:?}: a dot segment is left"
        );
    }
    // Nothing is left for a second pass (or the app) to decode: an escaped
    // unreserved character would become a different path there.
    assert!(
        escaped_unreserved(&normal).is_none(),
        "{path:?} -> {normal:?}: still holds the escape {:?}",
        escaped_unreserved(&normal)
    );
    let again = normalize(&normal);
    assert_eq!(
        again.as_ref(),
        Some(&normal),
        "not idempotent: {path:?} -> {normal:?} -> {again:?}"
    );
    // Normalizing never makes more of a path: it only removes and decodes.
    assert!(normal.len() <= path.len(), "{path:?} -> {normal:?}: grew");
}

/// Whether some `%` in `path` has no two hex digits after it.
fn stray_percent(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// The first `%XX` in `path` that encodes an unreserved character.
fn escaped_unreserved(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    (0..bytes.len().saturating_sub(2)).find_map(|i| {
        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
        let byte = u8::from_str_radix(hex, 16).ok()?;
        let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
        (bytes[i] == b'%' && unreserved && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| &path[i..i + 3])
    })
}

/// `normalize_request`: the request keeps its query and gets the normal
/// path, or is refused (400) when the normal form is not a valid target.
fn check_request(pq: &PathAndQuery) {
    let mut req = Request::new(());
    *req.uri_mut() = Uri::from(pq.clone());
    let Some(want) = normalize(pq.path()).map(Cow::into_owned) else {
        assert!(normalize_request(req).is_err(), "{pq}: a stray % admitted");
        return;
    };
    match normalize_request(req) {
        Ok(req) => {
            assert_eq!(req.uri().path(), want, "{pq}: wrong path");
            assert_eq!(req.uri().query(), pq.query(), "{pq}: query changed");
        }
        Err(err) => {
            // Only a normal form that is no valid request target may fail.
            let target = match pq.query() {
                Some(q) => format!("{want}?{q}"),
                None => want,
            };
            assert!(
                PathAndQuery::try_from(target.as_str()).is_err(),
                "{pq}: refused ({err}) though {target:?} is a valid target"
            );
        }
    }
}
