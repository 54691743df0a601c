//! Authorities (`host[:port]`) as text: one grammar for the host a
//! request names (`routing::Target`) and the hosts the config names
//! (route hosts, DNS targets), so what validation accepts is what routing
//! matches. Pure functions, below both `config` and `outbound`.

use std::borrow::Cow;

/// Splits `host[:port]` (IPv6 literals in brackets, any `user@` dropped):
/// the host lowercase and without a trailing dot, and the port if given;
/// `None` if malformed.
pub fn split(authority: &str) -> Option<(Cow<'_, str>, Option<u16>)> {
    // Drop any userinfo: `user@host`.
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (ip, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (hostport, None),
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Some((host, port))
}

/// The route host that matches any host not matched otherwise.
pub const ANY_HOST: &str = "*";

/// Parses the `host` of a route: `name`, `name:port`, or `*` (any host).
pub fn parse_route_host(text: &str) -> Result<(String, Option<u16>), String> {
    if text == ANY_HOST {
        return Ok((ANY_HOST.to_owned(), None));
    }
    let (host, port) = split(text).ok_or_else(|| {
        format!("route host {text:?} is not a host name or host:port (no scheme, no path)")
    })?;
    if host.contains(['/', ' ', '@']) {
        return Err(format!(
            "route host {text:?} must be a bare host name, without a path"
        ));
    }
    Ok((host.into_owned(), port))
}

/// Splits `host:port`: a destination's `dns`, a name to resolve and the
/// port of every address it gives.
pub fn parse_dns_target(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("dns {text:?} must be host:port, like users.shop.svc.cluster.local:15006");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '[', ']']) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_targets() {
        assert_eq!(
            parse_dns_target("users.shop.svc.cluster.local:15006"),
            Ok(("users.shop.svc.cluster.local".to_owned(), 15006))
        );
        for bad in ["users", "users:", ":80", "users:0", "users:http", "a b:80"] {
            assert!(parse_dns_target(bad).is_err(), "{bad}");
        }
    }
}
