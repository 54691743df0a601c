//! `http::request_id`: `x-request-id` and the correlation id kept from a
//! client when usable, made up otherwise, one of each in the end.
//!
//! Input: the correlation header's name on the first line (the default
//! when it is not a valid one), then a header block.

use http::HeaderMap;
use http::header::HeaderValue;
use pilotfish::http::request_id::{REQUEST_ID, RequestIdHeaders};

use super::input::{header_map, split_first_line, text};

/// Checks one input.
pub fn run(data: &[u8]) {
    let (first, block) = split_first_line(data);
    let ids = text(first)
        .and_then(|name| RequestIdHeaders::new(name).ok())
        .unwrap_or_default();
    assert_ne!(*ids.correlation(), REQUEST_ID);
    let original = header_map(block);
    let mut headers = original.clone();
    let got = ids.ensure(&mut headers);

    for (name, value) in [
        (&REQUEST_ID, &got.request_id),
        (ids.correlation(), &got.correlation_id),
    ] {
        let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
        assert_eq!(values, [value], "{name}: not exactly the id");
        assert!(usable(value), "{name}: {value:?} is not usable");
        // A usable id the client sent is kept (the first of them).
        if let Some(first) = original.get(name).filter(|v| usable(v)) {
            assert_eq!(value, first, "{name}: a usable id was replaced");
        }
    }
    if original.get(ids.correlation()).is_none_or(|v| !usable(v)) {
        assert_eq!(
            got.correlation_id, got.request_id,
            "no correlation id: the request id"
        );
    }
    assert_eq!(got.request_id(), got.request_id.to_str().expect("text"));
    for name in original.keys() {
        if name != REQUEST_ID && name != ids.correlation() {
            assert!(
                original
                    .get_all(name)
                    .iter()
                    .eq(headers.get_all(name).iter())
            );
        }
    }
    // Stamped on a response, replacing what the app set.
    let mut response = HeaderMap::new();
    response.append(REQUEST_ID, HeaderValue::from_static("app's"));
    ids.stamp(&mut response, &got);
    assert_eq!(
        response.get_all(REQUEST_ID).iter().collect::<Vec<_>>(),
        [&got.request_id]
    );
}

/// Visible ASCII, 1 to 128 bytes: safe in a log line and a header.
fn usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
}
