//! The client's address behind proxies: `X-Forwarded-For` read with a
//! number of trusted hops, then appended to and `X-Forwarded-Proto` set,
//! as Envoy's `xff_num_trusted_hops` does. With no trusted hop, what a
//! client writes in the field is kept for the app to read but never
//! believed: the address limits key on is the peer's.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::HeaderValue;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// The client's address: with `trusted_hops` proxies in front of the
/// gateway (each appends the address it got the request from), the entry
/// that many places from the right of `X-Forwarded-For`; the peer's
/// address when there are fewer entries than that, or one is not an
/// address, so a client cannot pick its own.
pub fn client_address(headers: &HeaderMap, peer: IpAddr, trusted_hops: u32) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    // Entries from the right; several fields are one list (RFC 9110 §5.3).
    let mut entries = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|value| {
            let text = value.to_str().unwrap_or("");
            text.rsplit(',').map(str::trim).collect::<Vec<_>>()
        });
    // The last trusted proxy appended the address it got it from; each
    // one before it appended its own peer's.
    match entries.nth(trusted_hops as usize - 1) {
        Some(entry) => parse_entry(entry).unwrap_or(peer),
        None => peer,
    }
}

/// An `X-Forwarded-For` entry: an address, perhaps with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    entry.rsplit_once(':')?.0.parse().ok()
}

/// Appends the peer to `X-Forwarded-For` (one field, as most apps read
/// only the first) and sets `X-Forwarded-Proto` to how the client reached
/// the gateway.
pub fn append(headers: &mut HeaderMap, peer: IpAddr, https: bool) {
    let before: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if before.is_empty() {
        peer.to_string()
    } else {
        format!("{}, {peer}", before.join(", "))
    };
    headers.remove(X_FORWARDED_FOR);
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn without_trusted_hops_the_peer_is_the_client() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let headers = xff(&["1.2.3.4"]);
        assert_eq!(client_address(&headers, peer, 0), peer);
    }

    #[test]
    fn trusted_hops_count_from_the_right() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let headers = xff(&["6.6.6.6, 198.51.100.7", "10.0.0.1"]);
        let at = |hops| client_address(&headers, peer, hops).to_string();
        assert_eq!(at(1), "10.0.0.1");
        assert_eq!(at(2), "198.51.100.7");
        assert_eq!(at(3), "6.6.6.6");
        // More hops trusted than entries: nothing a client wrote counts.
        assert_eq!(at(4), "10.0.0.2");
    }

    #[test]
    fn entries_with_ports_and_garbage() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_address(&xff(&["192.0.2.1:4711"]), peer, 1).to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            client_address(&xff(&["[2001:db8::1]:80"]), peer, 1).to_string(),
            "2001:db8::1"
        );
        assert_eq!(client_address(&xff(&["unknown"]), peer, 1), peer);
        assert_eq!(client_address(&xff(&[]), peer, 1), peer);
    }

    #[test]
    fn append_keeps_what_came_and_sets_the_scheme() {
        let mut headers = xff(&["1.2.3.4", "5.6.7.8"]);
        append(&mut headers, "10.0.0.9".parse().unwrap(), true);
        assert_eq!(headers[X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 10.0.0.9");
        assert_eq!(headers[X_FORWARDED_PROTO], "https");
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        append(&mut headers, "10.0.0.9".parse().unwrap(), false);
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
    }
}
