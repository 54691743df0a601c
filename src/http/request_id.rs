//! Request ids: `x-request-id` and a correlation id (`x-correlation-id`
//! unless configured otherwise). Each is kept when the request carries a
//! usable one; a missing request id is made up (a UUID v4) and a missing
//! correlation id takes the request id's value. Both are passed to the
//! app, sent on every call upstream and returned on the response, so every
//! log line of one user request, at every hop, can be found by one value.

use http::HeaderMap;
use http::header::{Entry, HeaderName, HeaderValue};

use crate::config::parse_correlation_header;

/// The request id's header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept; a longer one is replaced (it would bloat every log
/// line and header upstream).
const MAX_LEN: usize = 128;

/// The ids of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIds {
    /// `x-request-id`.
    pub request_id: HeaderValue,
    /// The correlation id.
    pub correlation_id: HeaderValue,
}

impl RequestIds {
    /// The request id as text (ids are checked visible ASCII).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The correlation id as text.
    pub fn correlation_id(&self) -> &str {
        self.correlation_id.to_str().unwrap_or_default()
    }
}

/// Which header carries the correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdHeaders {
    correlation: HeaderName,
}

impl Default for RequestIdHeaders {
    fn default() -> Self {
        Self {
            correlation: HeaderName::from_static("x-correlation-id"),
        }
    }
}

impl RequestIdHeaders {
    /// The correlation id in `correlation` (validated with the config:
    /// [`parse_correlation_header`]).
    pub fn new(correlation: &str) -> Result<Self, String> {
        let correlation = parse_correlation_header(correlation)?;
        Ok(Self { correlation })
    }

    /// The correlation id's header.
    pub fn correlation(&self) -> &HeaderName {
        &self.correlation
    }

    /// Keeps or makes both ids, leaving exactly one of each in `headers`.
    pub fn ensure(&self, headers: &mut HeaderMap) -> RequestIds {
        let request_id = ensure_one(headers, &REQUEST_ID, uuid_v4);
        let correlation_id = ensure_one(headers, &self.correlation, || request_id.clone());
        RequestIds {
            request_id,
            correlation_id,
        }
    }

    /// Puts the ids on a response, replacing what the app set: the client
    /// gets the values every log line carries.
    pub fn stamp(&self, headers: &mut HeaderMap, ids: &RequestIds) {
        headers.insert(REQUEST_ID, ids.request_id.clone());
        headers.insert(self.correlation.clone(), ids.correlation_id.clone());
    }
}

/// The first usable value of `name`, or `make`'s; the header ends up
/// holding just that value.
///
/// The value is marked sensitive, which HPACK encodes as never indexed: an
/// id differs on every request, and in the HTTP/2 link's header table it
/// would only push out the fields that do repeat (and cost an insertion on
/// both sides).
fn ensure_one(
    headers: &mut HeaderMap,
    name: &HeaderName,
    make: impl FnOnce() -> HeaderValue,
) -> HeaderValue {
    let value = match headers.entry(name) {
        Entry::Occupied(mut entry) => {
            if !usable(entry.get()) {
                entry.insert(make());
            } else if entry.iter().nth(1).is_some() {
                let first = entry.get().clone();
                entry.insert(first);
            }
            entry.into_mut()
        }
        Entry::Vacant(entry) => entry.insert(make()),
    };
    value.set_sensitive(true);
    value.clone()
}

/// Visible ASCII, not empty, not too long: safe in a log line and a header.
fn usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// A random (version 4) UUID in its 36-character form.
pub fn uuid_v4() -> HeaderValue {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let a = uuid_v4();
        let b = uuid_v4();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 36);
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{text}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{text}");
        assert!(
            text.bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn present_ids_are_kept_and_missing_ones_made() {
        let ids = RequestIdHeaders::default();
        let mut headers = HeaderMap::new();
        headers.insert("x-correlation-id", HeaderValue::from_static("order-42"));
        let got = ids.ensure(&mut headers);
        assert_eq!(got.correlation_id(), "order-42");
        assert_eq!(got.request_id().len(), 36);
        assert_eq!(headers.get(REQUEST_ID), Some(&got.request_id));
        // Again, as the next hop: nothing changes.
        assert_eq!(ids.ensure(&mut headers), got);
    }

    #[test]
    fn unusable_or_repeated_ids_are_settled_to_one() {
        let ids = RequestIdHeaders::new("x-trace-me").unwrap();
        let mut headers = HeaderMap::new();
        headers.append(REQUEST_ID, HeaderValue::from_static("first"));
        headers.append(REQUEST_ID, HeaderValue::from_static("second"));
        headers.insert("x-trace-me", HeaderValue::from_static("has space"));
        let got = ids.ensure(&mut headers);
        assert_eq!(got.request_id(), "first");
        assert_eq!(headers.get_all(REQUEST_ID).iter().count(), 1);
        assert_eq!(
            got.correlation_id(),
            "first",
            "an unusable correlation id is replaced by the request id"
        );
        let long = "a".repeat(MAX_LEN + 1);
        headers.insert(REQUEST_ID, HeaderValue::from_str(&long).unwrap());
        assert_ne!(ids.ensure(&mut headers).request_id(), long);
    }

    #[test]
    fn a_missing_correlation_id_takes_the_request_id() {
        let ids = RequestIdHeaders::default();
        let mut headers = HeaderMap::new();
        let made = ids.ensure(&mut headers);
        assert_eq!(made.request_id().len(), 36);
        assert_eq!(made.correlation_id, made.request_id);
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("req-7"));
        assert_eq!(ids.ensure(&mut headers).correlation_id(), "req-7");
        assert_eq!(headers.get("x-correlation-id").unwrap(), "req-7");
    }

    #[test]
    fn the_correlation_header_must_be_its_own() {
        assert!(RequestIdHeaders::new("x-request-id").is_err());
        // The config's grammar refuses this module's request id header.
        assert!(RequestIdHeaders::new(REQUEST_ID.as_str()).is_err());
        assert!(RequestIdHeaders::new("bad header").is_err());
    }

    #[test]
    fn responses_carry_the_ids() {
        let ids = RequestIdHeaders::default();
        let mut request = HeaderMap::new();
        let got = ids.ensure(&mut request);
        let mut response = HeaderMap::new();
        response.insert(REQUEST_ID, HeaderValue::from_static("the-app-s-own"));
        ids.stamp(&mut response, &got);
        assert_eq!(response.get(REQUEST_ID), Some(&got.request_id));
        assert_eq!(response.get("x-correlation-id"), Some(&got.correlation_id));
    }
}
