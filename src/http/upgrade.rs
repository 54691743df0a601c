//! HTTP upgrades (WebSockets and other `Upgrade` protocols) across the
//! proxy's hops, in both of the forms a hop can take:
//!
//! - HTTP/1.1: `GET` with `Connection: upgrade` and `Upgrade: websocket`,
//!   answered `101 Switching Protocols`; the app's side, a plaintext
//!   upstream's, and the HTTP/1.1 mesh link's.
//! - HTTP/2 (the mesh link): an extended CONNECT (RFC 8441) with
//!   `:protocol websocket`, answered `200`; the stream is the tunnel.
//!
//! The headers of the handshake (`Sec-WebSocket-Key`, `-Accept`,
//! `-Protocol`, `-Extensions`, cookies) cross every hop unchanged, so the
//! app and its client negotiate end to end; a refusal (any other status)
//! comes back as the app sent it.

use http::header::{CONNECTION, HeaderValue, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};

/// `upgrade`, the `Connection` token of an upgrade request.
const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// The protocol a request asks to switch to: its `Upgrade` header when
/// `Connection` names `upgrade` (HTTP/1.1), or the `:protocol` of an
/// extended CONNECT (HTTP/2).
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() {
        return HeaderValue::from_str(protocol.as_str()).ok();
    }
    if req.version() != Version::HTTP_11 || !names_upgrade(req.headers()) {
        return None;
    }
    req.headers().get(UPGRADE).cloned()
}

/// Whether `Connection` lists the `upgrade` token.
fn names_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether a request is an extended CONNECT (an upgrade over HTTP/2).
pub fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_some()
}

/// Makes request parts (hop-by-hop fields already removed) ask for
/// `protocol` in HTTP/1.1: `GET`, `Connection: upgrade`, `Upgrade`.
pub fn as_http1(parts: &mut http::request::Parts, protocol: &HeaderValue) {
    if parts.method == Method::CONNECT {
        parts.method = Method::GET; // an extended CONNECT was a GET
    }
    parts.extensions.remove::<hyper::ext::Protocol>();
    parts.version = Version::HTTP_11;
    parts.headers.insert(CONNECTION, UPGRADE_TOKEN);
    parts.headers.insert(UPGRADE, protocol.clone());
}

/// Makes request parts ask for `protocol` on HTTP/2: an extended CONNECT
/// with `:protocol`, the other headers kept.
pub fn as_extended_connect(parts: &mut http::request::Parts, protocol: &HeaderValue) {
    parts.method = Method::CONNECT;
    parts.headers.remove(CONNECTION);
    parts.headers.remove(UPGRADE);
    if let Ok(protocol) = protocol.to_str() {
        parts
            .extensions
            .insert(hyper::ext::Protocol::from(protocol));
    }
}

/// Whether a response accepted the upgrade: 101 to an HTTP/1.1 request,
/// 2xx to an extended CONNECT.
pub fn accepted(response_status: StatusCode, over_h2: bool) -> bool {
    if over_h2 {
        response_status.is_success()
    } else {
        response_status == StatusCode::SWITCHING_PROTOCOLS
    }
}

/// The response that tells a client its upgrade to `protocol` was
/// accepted, with the upstream's handshake headers: 101 with `Upgrade` on
/// HTTP/1.1, 200 on HTTP/2.
pub fn accept<B>(response: Response<B>, protocol: &HeaderValue, to_h2: bool) -> Response<B> {
    let (mut parts, body) = response.into_parts();
    super::headers::strip_hop_by_hop(&mut parts.headers);
    if to_h2 {
        parts.status = StatusCode::OK;
    } else {
        parts.status = StatusCode::SWITCHING_PROTOCOLS;
        parts.version = Version::HTTP_11;
        parts.headers.insert(CONNECTION, UPGRADE_TOKEN);
        parts.headers.insert(UPGRADE, protocol.clone());
    }
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn websocket_get() -> Request<()> {
        Request::get("/chat")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap()
    }

    #[test]
    fn an_upgrade_crosses_http1_and_http2_and_back() {
        let req = websocket_get();
        let protocol = requested(&req).expect("asks for an upgrade");
        assert_eq!(protocol, "websocket");

        let (mut parts, ()) = req.into_parts();
        super::super::headers::strip_hop_by_hop(&mut parts.headers);
        as_extended_connect(&mut parts, &protocol);
        let h2 = Request::from_parts(parts, ());
        assert!(is_extended_connect(&h2));
        assert_eq!(requested(&h2).expect("still asks"), "websocket");
        assert!(h2.headers().get(UPGRADE).is_none(), "no Upgrade on HTTP/2");

        let (mut parts, ()) = h2.into_parts();
        as_http1(&mut parts, &protocol);
        let again = Request::from_parts(parts, ());
        assert_eq!(again.method(), Method::GET);
        assert_eq!(requested(&again).expect("asks again"), "websocket");
        assert_eq!(
            again.headers()["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
    }

    #[test]
    fn a_plain_request_asks_for_nothing() {
        let mut req = websocket_get();
        req.headers_mut().remove(CONNECTION);
        assert_eq!(requested(&req), None, "Upgrade without Connection: upgrade");
        let h2c = Request::get("/")
            .header("upgrade", "h2c")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(requested(&h2c), None);
    }

    #[test]
    fn an_accepted_upgrade_is_answered_in_the_clients_form() {
        let app = Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(())
            .unwrap();
        assert!(accepted(app.status(), false));
        let protocol = HeaderValue::from_static("websocket");
        let over_h2 = accept(app, &protocol, true);
        assert_eq!(over_h2.status(), 200);
        assert!(over_h2.headers().get(UPGRADE).is_none());
        assert_eq!(
            over_h2.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(accepted(over_h2.status(), true));
        let back = accept(over_h2, &protocol, false);
        assert_eq!(back.status(), 101);
        assert_eq!(back.headers()["upgrade"], "websocket");
        assert_eq!(back.headers()["connection"], "upgrade");
    }
}
