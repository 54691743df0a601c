//! A route's changes to a request or response (HTTPRoute filters): header
//! fields set, added and removed; the path and host rewritten; the
//! `Location` of a redirect. Pure functions.

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};

use crate::authority;
use crate::config::{HeaderModifier, PathRewrite, Redirect, UrlRewrite};

/// A [`HeaderModifier`], parsed.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    /// Parses the names and values; the error names the bad one.
    pub fn compile(m: &HeaderModifier) -> Result<Self, String> {
        let pairs = |map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .map(|(name, value)| Ok((header_name(name)?, header_value(name, value)?)))
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Self {
            remove: m
                .remove
                .iter()
                .map(|name| header_name(name))
                .collect::<Result<_, _>>()?,
            set: pairs(&m.set)?,
            add: pairs(&m.add)?,
        })
    }

    /// Removes, then sets (replacing every field of the name), then adds
    /// (beside any of the name).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header field name"))
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value)
        .map_err(|_| format!("header {name:?}: {value:?} is not a valid field value"))
}

/// The path after a [`PathRewrite`]. `ReplacePrefixMatch` replaces whole
/// segments: `/api` replaced by `/` makes `/api/x` `/x` and `/api` `/`.
pub fn rewrite_path(
    path: &str,
    rewrite: &PathRewrite,
    matched_prefix: Option<&str>,
) -> Result<String, String> {
    match rewrite {
        PathRewrite::ReplaceFullPath(full) => Ok(full.clone()),
        PathRewrite::ReplacePrefixMatch(replacement) => {
            let prefix = matched_prefix
                .ok_or("replace_prefix_match needs a route that matches by prefix")?
                .trim_end_matches('/');
            let rest = path
                .strip_prefix(prefix)
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .ok_or_else(|| format!("path {path:?} does not start with {prefix:?}"))?;
            Ok(match (replacement.trim_end_matches('/'), rest) {
                ("", "") => "/".to_owned(),
                (_, "") => replacement.clone(),
                (base, rest) => format!("{base}{rest}"),
            })
        }
    }
}

/// Applies `url_rewrite` to a request: the path (the query kept), and the
/// host: `Host` (HTTP/1, or when present) and the URI's authority, if it
/// has one.
pub fn rewrite(
    parts: &mut http::request::Parts,
    rewrite: &UrlRewrite,
    matched_prefix: Option<&str>,
) -> Result<(), String> {
    let mut uri = parts.uri.clone().into_parts();
    if let Some(path_rewrite) = &rewrite.path {
        let path = rewrite_path(parts.uri.path(), path_rewrite, matched_prefix)?;
        let with_query = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        uri.path_and_query = Some(
            PathAndQuery::try_from(with_query.as_str())
                .map_err(|_| format!("rewritten path {with_query:?} is not valid"))?,
        );
    }
    if let Some(hostname) = &rewrite.hostname {
        if uri.authority.is_some() {
            uri.authority = Some(
                Authority::try_from(hostname.as_str())
                    .map_err(|_| format!("hostname {hostname:?} is not a valid authority"))?,
            );
        }
        if parts.version != Version::HTTP_2 || parts.headers.contains_key(HOST) {
            parts.headers.insert(HOST, header_value("host", hostname)?);
        }
    }
    parts.uri = Uri::from_parts(uri).map_err(|e| format!("rewritten URI is not valid: {e}"))?;
    Ok(())
}

/// The `Location` of a redirect: the scheme (given, else
/// `request_scheme`), the host (given, else the request's without its
/// port), the port (given, left out when it is the scheme's default; when
/// neither scheme, host nor port is given, the request's), the path as
/// [`rewrite_path`] makes it (else the request's), the query kept.
pub fn redirect_location(
    parts: &http::request::Parts,
    redirect: &Redirect,
    matched_prefix: Option<&str>,
    request_scheme: &str,
) -> Result<HeaderValue, String> {
    let scheme = redirect.scheme.as_deref().unwrap_or(request_scheme);
    let request_authority = match parts.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => parts.headers.get(HOST).and_then(|h| h.to_str().ok()),
    };
    let request_host = request_authority.and_then(authority::split);
    let (host, port) = match (&redirect.hostname, redirect.port) {
        (Some(host), port) => (host.clone(), port),
        (None, port) => {
            let (host, request_port) =
                request_host.ok_or("the request names no host to redirect to")?;
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.into_owned()
            };
            let keep = redirect.scheme.is_none() && port.is_none();
            (host, if keep { request_port } else { port })
        }
    };
    let default_port = match scheme {
        "https" => 443,
        _ => 80,
    };
    let path = match &redirect.path {
        Some(rewrite) => rewrite_path(parts.uri.path(), rewrite, matched_prefix)?,
        None => parts.uri.path().to_owned(),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port.filter(|p| *p != default_port) {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(&path);
    if let Some(query) = parts.uri.query() {
        location.push('?');
        location.push_str(query);
    }
    HeaderValue::from_str(&location)
        .map_err(|_| format!("redirect to {location:?} is not a valid field value"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> http::request::Parts {
        let mut req = http::Request::get(uri);
        if let Some(host) = host {
            req = req.header(HOST, host);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn header_ops_remove_then_set_then_add() {
        let ops = HeaderOps::compile(&HeaderModifier {
            set: map(&[("x-env", "prod")]),
            add: map(&[("x-tag", "b"), ("x-env", "extra")]),
            remove: vec!["X-Debug".into(), "x-tag".into()],
        })
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-env", HeaderValue::from_static("dev"));
        headers.append("x-env", HeaderValue::from_static("test"));
        headers.append("x-debug", HeaderValue::from_static("1"));
        headers.append("x-tag", HeaderValue::from_static("a"));
        ops.apply(&mut headers);
        let all = |name| {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-env"), ["prod", "extra"]);
        assert_eq!(all("x-tag"), ["b"]);
        assert!(all("x-debug").is_empty());
    }

    #[test]
    fn header_ops_refuse_bad_names_and_values() {
        let bad_name = HeaderModifier {
            remove: vec!["bad name".into()],
            ..HeaderModifier::default()
        };
        assert!(
            HeaderOps::compile(&bad_name)
                .unwrap_err()
                .contains("bad name")
        );
        let bad_value = HeaderModifier {
            set: map(&[("x-a", "line\nbreak")]),
            ..HeaderModifier::default()
        };
        assert!(HeaderOps::compile(&bad_value).unwrap_err().contains("x-a"));
    }

    #[test]
    fn prefix_replacement_is_by_whole_segments() {
        let prefix = |with: &str| PathRewrite::ReplacePrefixMatch(with.to_owned());
        let cases: &[(&str, &str, &str, &str)] = &[
            ("/api", "/", "/api/x", "/x"),
            ("/api", "/", "/api", "/"),
            ("/api/", "/", "/api/x/y", "/x/y"),
            ("/api", "/v2", "/api/x", "/v2/x"),
            ("/api", "/v2", "/api", "/v2"),
            ("/api", "/v2/", "/api/x", "/v2/x"),
            ("/", "/v2", "/x", "/v2/x"),
            ("/", "/", "/x", "/x"),
        ];
        for (matched, with, path, want) in cases {
            let got = rewrite_path(path, &prefix(with), Some(matched)).unwrap();
            assert_eq!(got, *want, "{matched} -> {with} on {path}");
        }
        assert!(rewrite_path("/x", &prefix("/"), None).is_err());
        assert!(rewrite_path("/apix", &prefix("/"), Some("/api")).is_err());
        let full = PathRewrite::ReplaceFullPath("/new".into());
        assert_eq!(rewrite_path("/old/x", &full, None).unwrap(), "/new");
    }

    #[test]
    fn rewrite_keeps_the_query_and_sets_the_host() {
        let rw = UrlRewrite {
            hostname: Some("backend.internal".into()),
            path: Some(PathRewrite::ReplacePrefixMatch("/".into())),
        };
        let mut p = parts("/api/users?id=7", Some("api.example.com"));
        rewrite(&mut p, &rw, Some("/api")).unwrap();
        assert_eq!(p.uri, "/users?id=7");
        assert_eq!(p.headers[HOST], "backend.internal");

        let mut p = parts("http://api.example.com:8080/api?x", None);
        rewrite(&mut p, &rw, Some("/api")).unwrap();
        assert_eq!(p.uri.to_string(), "http://backend.internal/?x");
        assert_eq!(p.headers[HOST], "backend.internal");

        let mut p = parts("/api", None);
        p.version = Version::HTTP_2;
        let host_only = UrlRewrite {
            hostname: Some("b".into()),
            path: None,
        };
        rewrite(&mut p, &host_only, None).unwrap();
        assert_eq!(p.uri, "/api");
        assert!(
            !p.headers.contains_key(HOST),
            "HTTP/2 without authority gets none"
        );
    }

    #[test]
    fn redirect_locations() {
        let redirect = |scheme: Option<&str>, host: Option<&str>, port, path| Redirect {
            scheme: scheme.map(str::to_owned),
            hostname: host.map(str::to_owned),
            port,
            path,
            status_code: 302,
        };
        let p = parts("/api/a?q=1", Some("Shop.example:8080"));
        let at = |r: &Redirect, scheme| {
            redirect_location(&p, r, Some("/api"), scheme)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        // nothing given: the request's scheme, host and port
        assert_eq!(
            at(&redirect(None, None, None, None), "http"),
            "http://shop.example:8080/api/a?q=1"
        );
        // a scheme alone: that scheme's default port
        assert_eq!(
            at(&redirect(Some("https"), None, None, None), "http"),
            "https://shop.example/api/a?q=1"
        );
        assert_eq!(
            at(&redirect(Some("https"), None, Some(8443), None), "http"),
            "https://shop.example:8443/api/a?q=1"
        );
        assert_eq!(
            at(&redirect(None, Some("new.example"), None, None), "https"),
            "https://new.example/api/a?q=1"
        );
        assert_eq!(
            at(
                &redirect(None, Some("new.example"), Some(443), None),
                "https"
            ),
            "https://new.example/api/a?q=1"
        );
        let strip = Some(PathRewrite::ReplacePrefixMatch("/v2".into()));
        assert_eq!(
            at(&redirect(None, None, None, strip), "http"),
            "http://shop.example:8080/v2/a?q=1"
        );
        let v6 = parts("/", Some("[::1]:80"));
        let got = redirect_location(&v6, &redirect(None, None, None, None), None, "http").unwrap();
        assert_eq!(got, "http://[::1]/");
        let no_host = parts("/", None);
        assert!(
            redirect_location(&no_host, &redirect(None, None, None, None), None, "http").is_err()
        );
    }
}
