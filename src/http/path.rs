//! Path normalization (RFC 3986 §6.2.2): percent-encoded unreserved
//! characters are decoded and dot segments removed, so that the path an
//! authorization rule judges is the path the app will act on
//! (`/public/%2e%2e/admin` is `/admin`). `%2F` stays encoded: it is not a
//! separator. A `%` that does not start an escape (`/a%zz`, `/%%32e`) makes
//! the path invalid: left as it is, it could form a new escape with the
//! characters decoded after it, which the app would read differently.

use std::borrow::Cow;

use http::Request;
use http::uri::{PathAndQuery, Uri};

use super::ProxyError;

/// Puts a request's path in normal form (the query as it was), so the
/// routes, policies and limits that judge it, and the app that acts on it,
/// see one path. Both directions do this before deciding anything.
pub fn normalize_request<B>(req: Request<B>) -> Result<Request<B>, ProxyError> {
    let normal = match normalize(req.uri().path()).ok_or(ProxyError::InvalidPath)? {
        Cow::Borrowed(_) => return Ok(req),
        Cow::Owned(normal) => normal,
    };
    let (mut parts, body) = req.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let invalid = |_| ProxyError::InvalidPath;
    let mut uri = parts.uri.into_parts();
    uri.path_and_query = Some(PathAndQuery::try_from(path_and_query).map_err(invalid)?);
    parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::InvalidPath)?;
    Ok(Request::from_parts(parts, body))
}

/// The normalized form of an absolute path (without the query);
/// borrowed when the path is already normal, `None` when a `%` starts no
/// escape.
pub fn normalize(path: &str) -> Option<Cow<'_, str>> {
    // The common case, checked without allocating: most paths have
    // neither an escape nor a dot, and one SIMD scan says so.
    let bytes = path.as_bytes();
    if memchr::memchr2(b'%', b'.', bytes).is_none()
        || (memchr::memchr(b'%', bytes).is_none() && !has_dot_segment(path))
    {
        return Some(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let normal = if has_dot_segment(&decoded) {
        remove_dot_segments(&decoded)
    } else {
        decoded.into_owned()
    };
    Some(if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` where XX is an unreserved character and keeps the other
/// escapes whole; `None` for a `%` without two hex digits after it.
fn decode_unreserved(path: &str) -> Option<Cow<'_, str>> {
    if !path.contains('%') {
        return Some(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex)?;
            let lo = bytes.get(i + 2).copied().and_then(hex)?;
            let c = hi * 16 + lo;
            if is_unreserved(c) {
                out.push(char::from(c));
            } else {
                out.push_str(&path[i..i + 3]);
            }
            i += 3;
            continue;
        }
        // Copy one whole UTF-8 character.
        let len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + len]);
        i += len;
    }
    Some(Cow::Owned(out))
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| seg == "." || seg == "..")
}

/// RFC 3986 §5.2.4, for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
        // A trailing `.` or `..` leaves a directory: `/a/b/..` is `/a/`.
        if i == last && (*seg == "." || *seg == "..") {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        let cases = [
            ("/", "/"),
            ("/users/7", "/users/7"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/../../etc", "/etc"),
            ("/%7Euser", "/~user"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2f..%2fb", "/a%2f..%2fb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/%25%34%31", "/%2541"),
            ("/é/../x", "/x"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Some(want), "{input}");
            assert_eq!(normalize(want).as_deref(), Some(want), "{want} is normal");
        }
    }

    #[test]
    fn a_percent_that_starts_no_escape_is_invalid() {
        // Decoding `%32` after the stray `%` would make `%2e`, a dot the
        // app decodes after the dot segments were judged.
        for path in [
            "/public/%%32e%%32e/admin",
            "/bad%zz",
            "/trailing%",
            "/t%4",
            "/a%%53",
        ] {
            assert_eq!(normalize(path), None, "{path}");
        }
    }
}
