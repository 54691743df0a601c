//! Header handling common to both directions: hop-by-hop fields
//! (RFC 9110 §7.6.1), the headers Pilotfish adds, and the `Forwarded` /
//! `X-Forwarded-For` trail.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// Set on inbound requests to the app: the verified SPIFFE id of the
/// calling workload. Any copy sent by a caller is removed first.
pub const CLIENT_ID: HeaderName = HeaderName::from_static("pilotfish-client-id");

/// Set by the outbound sidecar on the mesh link when the app spoke
/// HTTP/1.x, so the inbound sidecar speaks HTTP/1.1 to the far app even
/// though the link itself is HTTP/2. Never reaches an app.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("pilotfish-orig-proto");

/// The value of [`ORIG_PROTO`] for HTTP/1.x callers.
pub const ORIG_PROTO_HTTP1: HeaderValue = HeaderValue::from_static("HTTP/1.1");

/// Header fields a sidecar may add on the way to the app (identity,
/// forwarding trail, original protocol), allowed on top of the limits.
/// Request ids and trace context (up to six fields with every format
/// configured) come on top.
pub const PROXY_ADDED_HEADERS: usize = 12;

/// `Keep-Alive`: a server's idle timeout for the connection.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes hop-by-hop fields: `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and
/// `TE` except the value `trailers` (which gRPC needs end to end).
/// `Proxy-Authorization` is for this proxy and goes no further.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names costs a
    // tenth of seven hashed removals (`benches/callgrind.sh`).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // `TE: trailers` survives on any of its lines, also when `Connection`
    // names TE (as RFC 9110 §10.1.4 asks a client to).
    let wants_trailers = headers
        .get_all(header::TE)
        .iter()
        .flat_map(|value| tokens(value.as_bytes()))
        .any(|t| {
            let coding = t.split(|&b| b == b';').next().unwrap_or_default();
            coding.trim_ascii().eq_ignore_ascii_case(b"trailers")
        });
    if headers.contains_key(header::CONNECTION) {
        // `Connection: close, x-foo` names further hop-by-hop fields. The
        // usual tokens (`keep-alive`, `close`) name nothing to remove but
        // `Keep-Alive`, which goes anyway: only other names are collected,
        // token by token (one odd byte spoils its own token only).
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            for name in tokens(value.as_bytes()) {
                let usual: [&[u8]; 5] = [b"", b"close", b"keep-alive", b"trailers", b"te"];
                if !usual.iter().any(|u| name.eq_ignore_ascii_case(u))
                    && let Ok(name) = HeaderName::from_bytes(name)
                {
                    named.push(name);
                }
            }
        }
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
    headers.remove(header::TE);
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The comma-separated tokens of a field value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// The fields `strip_hop_by_hop` removes whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::PROXY_AUTHORIZATION
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::TE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
}

/// Whether a field is one of Pilotfish's own (`pilotfish-*`).
fn is_own(name: &HeaderName) -> bool {
    name.as_str().starts_with("pilotfish-")
}

/// Removes every `pilotfish-*` field. Pilotfish's own fields speak for a
/// proxy (why it failed, who called, how the far app was reached); what
/// comes from outside (an app's request or response, a plaintext
/// upstream's response) may not, so they go before anything reads them.
/// Only the mesh link, from a peer that proved its identity, carries them.
pub fn strip_own(headers: &mut HeaderMap) {
    // One pass over the names; most messages carry none.
    if !headers.keys().any(is_own) {
        return;
    }
    let own: Vec<HeaderName> = headers.keys().filter(|n| is_own(n)).cloned().collect();
    for name in own {
        headers.remove(name);
    }
}

/// A peer's entries for `X-Forwarded-For` and `Forwarded` (RFC 7239),
/// made once per connection rather than formatted for every request.
#[derive(Debug, Clone)]
pub struct Forwarded {
    x_forwarded_for: HeaderValue,
    forwarded: HeaderValue,
}

impl Forwarded {
    /// The entries for a peer at `ip`, reached over TLS.
    pub fn for_peer(ip: IpAddr) -> Self {
        let text = ip.to_string();
        let element = match ip {
            IpAddr::V4(_) => format!("for={text};proto=https"),
            IpAddr::V6(_) => format!("for=\"[{text}]\";proto=https"),
        };
        // An address and these fixed characters are always a valid value.
        let value = |s: String| {
            HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        };
        Self {
            x_forwarded_for: value(text),
            forwarded: value(element),
        }
    }
}

/// Appends the calling peer to `X-Forwarded-For` and `Forwarded`, keeping
/// what earlier hops wrote.
pub fn append_forwarded(headers: &mut HeaderMap, peer: &Forwarded) {
    append_list(headers, &X_FORWARDED_FOR, &peer.x_forwarded_for);
    append_list(headers, &header::FORWARDED, &peer.forwarded);
}

/// Appends `item` to a comma-separated list header, joining all existing
/// lines into one.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: &HeaderValue) {
    let mut entry = match headers.entry(name) {
        // The usual case, the first hop: the ready-made value, no copy.
        http::header::Entry::Vacant(vacant) => {
            vacant.insert(item.clone());
            return;
        }
        http::header::Entry::Occupied(entry) => entry,
    };
    let mut joined = Vec::new();
    for value in entry.iter() {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(item.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        entry.insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_fields_from_outside_are_removed_and_nothing_else() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("pilotfish-error", "connect-refused"),
            ("pilotfish-outcome", "connect-failure"),
            (
                "Pilotfish-Client-Id",
                "spiffe://cluster.local/ns/default/sa/admin",
            ),
            ("pilotfish-attempt", "2"),
            ("x-pilotfish-note", "kept"),
            ("content-type", "text/plain"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        strip_own(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-pilotfish-note"]);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_fields_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic abc"),
            ("te", "gzip"),
            ("x-kept", "yes"),
            ("trailer", "x-checksum"),
        ]);
        strip_hop_by_hop(&mut headers);
        let mut names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["trailer", "x-kept"]);
    }

    #[test]
    fn te_trailers_survives_alone() {
        let mut headers = map(&[("te", "gzip, trailers;q=1")]);
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers["te"], "trailers");
    }

    #[test]
    fn forwarded_trail_is_appended() {
        let mut headers = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
        ]);
        append_forwarded(
            &mut headers,
            &Forwarded::for_peer("10.0.0.2".parse().unwrap()),
        );
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
        assert_eq!(
            headers["forwarded"],
            "for=10.0.0.1, for=10.0.0.2;proto=https"
        );

        let mut headers = HeaderMap::new();
        append_forwarded(&mut headers, &Forwarded::for_peer("::1".parse().unwrap()));
        assert_eq!(headers["forwarded"], "for=\"[::1]\";proto=https");
    }
}
