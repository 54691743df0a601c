//! The URIs requests carry upstream: which authority the client asked for,
//! and the absolute form HTTP/2 and the pooled HTTP/1.1 client need.

use http::header::{HOST, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Uri, Version};

use super::ProxyError;

/// The authority the client asked for: the URI's (absolute form, HTTP/2
/// `:authority`), else the `Host` header's.
pub fn requested_authority(parts: &Parts) -> Option<Authority> {
    parts.uri.authority().cloned().or_else(|| {
        let host = parts.headers.get(HOST)?;
        Authority::try_from(host.as_bytes()).ok()
    })
}

/// `scheme://authority` followed by the path and query of `uri` (`/` if
/// it has none).
pub fn absolute(scheme: Scheme, authority: Authority, uri: &Uri) -> Result<Uri, ProxyError> {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::NoAuthority)
}

/// Just the path and query (`/a?b`), as an HTTP/1.1 request line to an
/// origin server carries it.
pub fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(_) if uri.scheme().is_none() && uri.authority().is_none() => uri.clone(),
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// Shapes a request head for an HTTP/1.1 connection: the request line
/// carries only the path (origin form) and `Host` the authority the
/// client asked for.
pub fn to_http1(parts: &mut Parts) {
    if !parts.headers.contains_key(HOST) {
        if let Some(host) =
            requested_authority(parts).and_then(|asked| HeaderValue::from_str(asked.as_str()).ok())
        {
            parts.headers.insert(HOST, host);
        }
    }
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut req = http::Request::get(uri);
        if let Some(host) = host {
            req = req.header(HOST, host);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_uri_authority_wins_over_host() {
        let p = parts("http://users:8080/x", Some("other"));
        assert_eq!(requested_authority(&p).unwrap(), "users:8080");
        let p = parts("/x", Some("users"));
        assert_eq!(requested_authority(&p).unwrap(), "users");
        assert!(requested_authority(&parts("/x", None)).is_none());
        assert!(requested_authority(&parts("/x", Some("bad host"))).is_none());
    }

    #[test]
    fn origin_form_drops_scheme_and_authority() {
        let abs: Uri = "http://users:8080/a?b=c".parse().unwrap();
        assert_eq!(origin_form(&abs), "/a?b=c");
        let origin: Uri = "/x".parse().unwrap();
        assert_eq!(origin_form(&origin), "/x");
        let bare: Uri = "http://users".parse().unwrap();
        assert_eq!(origin_form(&bare), "/");
    }

    #[test]
    fn absolute_keeps_path_and_query() {
        let uri: Uri = "/a/b?c=d".parse().unwrap();
        let abs = absolute(Scheme::HTTP, Authority::from_static("users"), &uri).unwrap();
        assert_eq!(abs, "http://users/a/b?c=d");
        let star: Uri = "http://x".parse().unwrap();
        let abs = absolute(Scheme::HTTP, Authority::from_static("users"), &star).unwrap();
        assert_eq!(abs, "http://users/");
    }
}
