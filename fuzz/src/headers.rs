//! `http::headers`: hop-by-hop fields, Pilotfish's own fields, and the
//! `X-Forwarded-For` / `Forwarded` trail, on header blocks from outside.
//!
//! Input: the first line is the peer's IP address (a default when it is
//! not one); the rest is a header block.

use std::net::{IpAddr, Ipv4Addr};

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use pilotfish::http::headers::{Forwarded, append_forwarded, strip_hop_by_hop, strip_own};

use super::input::{header_map, list_elements, split_first_line, text};

/// Fields `strip_hop_by_hop` removes whatever `Connection` says.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

/// Checks one input.
pub fn run(data: &[u8]) {
    let (ip, block) = split_first_line(data);
    let ip: IpAddr = text(ip)
        .and_then(|t| t.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let headers = header_map(block);
    check_hop_by_hop(&headers);
    check_own(&headers);
    check_forwarded(&headers, ip);
}

fn check_hop_by_hop(original: &HeaderMap) {
    let mut headers = original.clone();
    strip_hop_by_hop(&mut headers);
    for name in HOP_BY_HOP {
        assert!(!headers.contains_key(name), "{name} survived");
    }
    // Every field `Connection` names is hop-by-hop (RFC 9110 §7.6.1),
    // whatever else the value holds. `close` and `trailers` are options,
    // not fields; `TE` is checked below (its `trailers` stays).
    let named: Vec<HeaderName> = original
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| list_elements(v.as_bytes()))
        .filter(|option| {
            !option.eq_ignore_ascii_case(b"close") && !option.eq_ignore_ascii_case(b"trailers")
        })
        .filter_map(|option| HeaderName::from_bytes(option).ok())
        .filter(|name| *name != header::TE)
        .collect();
    for name in &named {
        assert!(
            !headers.contains_key(name),
            "{name}, named by Connection {:?}, survived",
            original
                .get_all(header::CONNECTION)
                .iter()
                .collect::<Vec<_>>()
        );
    }
    // `TE` stays only as `trailers`, and only if the client sent it, in
    // any of its TE lines (several lines are one list).
    let wants_trailers = original.get_all(header::TE).iter().any(|v| {
        list_elements(v.as_bytes()).any(|e| {
            let token = e.split(|&b| b == b';').next().unwrap_or_default();
            super::input::trim_ows(token).eq_ignore_ascii_case(b"trailers")
        })
    });
    let te: Vec<&HeaderValue> = headers.get_all(header::TE).iter().collect();
    if wants_trailers {
        assert_eq!(
            te,
            [&HeaderValue::from_static("trailers")],
            "TE {:?} lost `trailers`",
            original.get_all(header::TE).iter().collect::<Vec<_>>()
        );
    } else {
        assert!(te.is_empty(), "TE {te:?} without trailers survived");
    }
    // Every other field is left as it was, values in order.
    for name in original.keys() {
        let removed = HOP_BY_HOP.contains(&name.as_str()) || *name == header::TE;
        if removed || named.contains(name) {
            continue;
        }
        assert!(
            original
                .get_all(name)
                .iter()
                .eq(headers.get_all(name).iter()),
            "{name} changed"
        );
    }
    // Nothing else appeared.
    for name in headers.keys() {
        assert!(original.contains_key(name), "{name} appeared");
    }
    let mut again = headers.clone();
    strip_hop_by_hop(&mut again);
    assert_eq!(again, headers, "not idempotent");
}

fn check_own(original: &HeaderMap) {
    let mut headers = original.clone();
    strip_own(&mut headers);
    for name in original.keys() {
        if name.as_str().starts_with("pilotfish-") {
            assert!(!headers.contains_key(name), "{name} survived");
        } else {
            assert!(
                original
                    .get_all(name)
                    .iter()
                    .eq(headers.get_all(name).iter()),
                "{name} changed"
            );
        }
    }
    assert_eq!(
        headers.keys_len(),
        original
            .keys()
            .filter(|n| !n.as_str().starts_with("pilotfish-"))
            .count()
    );
}

fn check_forwarded(original: &HeaderMap, ip: IpAddr) {
    let mut headers = original.clone();
    append_forwarded(&mut headers, &Forwarded::for_peer(ip));
    let element = match ip {
        IpAddr::V4(_) => format!("for={ip};proto=https"),
        IpAddr::V6(_) => format!("for=\"[{ip}]\";proto=https"),
    };
    for (name, entry) in [("x-forwarded-for", ip.to_string()), ("forwarded", element)] {
        let before: Vec<&[u8]> = original
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let mut want = before.join(&b", "[..]);
        if !before.is_empty() {
            want.extend_from_slice(b", ");
        }
        want.extend_from_slice(entry.as_bytes());
        let after: Vec<&[u8]> = headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(
            after,
            [&want[..]],
            "{name}: the trail is not the earlier hops then this one"
        );
    }
    // Nothing else changed.
    for name in original.keys() {
        if name != "x-forwarded-for" && name != "forwarded" {
            assert!(
                original
                    .get_all(name)
                    .iter()
                    .eq(headers.get_all(name).iter())
            );
        }
    }
}
