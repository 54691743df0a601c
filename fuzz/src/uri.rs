//! `http::uri`: the authority a client asked for (absolute-form URI or
//! `Host`) and the shapes a request takes upstream (origin form for an
//! HTTP/1.1 hop, absolute form for HTTP/2).
//!
//! Input: the request target on the first line (absolute or origin
//! form), then a header block.

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Request, Uri, Version};
use pilotfish::http::uri::{absolute, origin_form, requested_authority, to_http1};

use super::input::{header_map, split_first_line};

/// Checks one input.
pub fn run(data: &[u8]) {
    let (first, block) = split_first_line(data);
    let Ok(uri) = Uri::try_from(first) else {
        return;
    };
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = header_map(block);
    let (mut parts, ()) = req.into_parts();

    let asked = requested_authority(&parts);
    match uri.authority() {
        Some(authority) => assert_eq!(asked.as_ref(), Some(authority), "the URI's wins"),
        None => {
            let host = parts.headers.get(HOST).map(|h| h.as_bytes());
            let from_host = host.and_then(|h| Authority::try_from(h).ok());
            assert_eq!(asked, from_host);
        }
    }

    let origin = origin_form(&uri);
    assert!(
        origin.scheme().is_none() && origin.authority().is_none(),
        "{origin}"
    );
    let want = uri.path_and_query().map_or("/", |pq| pq.as_str());
    assert_eq!(origin.path_and_query().map(|pq| pq.as_str()), Some(want));

    let authority = Authority::from_static("upstream:8080");
    if let Ok(abs) = absolute(Scheme::HTTP, authority.clone(), &uri) {
        assert_eq!(abs.scheme(), Some(&Scheme::HTTP));
        assert_eq!(abs.authority(), Some(&authority));
        assert_eq!(abs.path_and_query().map(|pq| pq.as_str()), Some(want));
    }

    let had_host = parts
        .headers
        .get_all(HOST)
        .iter()
        .cloned()
        .collect::<Vec<_>>();
    to_http1(&mut parts);
    assert_eq!(parts.version, Version::HTTP_11);
    assert_eq!(parts.uri, origin);
    let host: Vec<_> = parts.headers.get_all(HOST).iter().cloned().collect();
    if had_host.is_empty() {
        // The authority the client asked for goes in `Host`.
        let want: Vec<_> = asked.iter().map(|a| a.as_str()).collect();
        assert_eq!(host, want, "Host for {uri}");
    } else {
        assert_eq!(host, had_host, "Host changed");
    }
}
