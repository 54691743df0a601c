//! Endpoints every demo service has: `/echo`, `/bytes`, `/upload`, `/sse`
//! and `/status/{code}`, for trying the mesh with any kind of traffic.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

use super::reply::{self, Body, ChannelBody, RepeatBody, query_param};

/// Most events one `/sse` request may ask for.
const MAX_EVENTS: u64 = 100_000;

/// `/echo`: what the service received, as JSON; the body is read and
/// counted, not kept.
pub async fn echo(service: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.entry(name.as_str()).or_default().push(value);
    }
    let body_bytes = match count_body(body).await {
        Ok(n) => n,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, e),
    };
    let value = json!({
        "service": service,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    reply::json(StatusCode::OK, &value)
}

/// `GET /bytes?n=N`: N bytes, streamed in 64 KiB chunks.
pub fn bytes(query: Option<&str>) -> Response<Body> {
    let Some(text) = query_param(query, "n") else {
        return reply::error(StatusCode::BAD_REQUEST, "missing ?n=BYTES");
    };
    let Ok(n) = text.parse::<u64>() else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            format!("n={text:?} is not valid: expected a number of bytes"),
        );
    };
    let mut response = reply::with_type(
        StatusCode::OK,
        RepeatBody::new(n).boxed_unsync(),
        "application/octet-stream",
    );
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(n));
    response
}

/// `POST /upload`: counts the body as it streams in; `{"bytes": N}`.
pub async fn upload(req: Request<Incoming>) -> Response<Body> {
    match count_body(req.into_body()).await {
        Ok(n) => reply::json(StatusCode::OK, &json!({ "bytes": n })),
        Err(e) => reply::error(StatusCode::BAD_REQUEST, e),
    }
}

/// `GET /sse?n=5&interval=100ms`: n server-sent events, one per interval.
pub fn sse(query: Option<&str>) -> Response<Body> {
    let n = match query_param(query, "n").map(str::parse::<u64>) {
        None => 5,
        Some(Ok(n)) if n <= MAX_EVENTS => n,
        Some(_) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                format!("n is not valid: expected a number of events up to {MAX_EVENTS}"),
            );
        }
    };
    let interval = match query_param(query, "interval").map(humantime::parse_duration) {
        None => Duration::from_millis(100),
        Some(Ok(interval)) => interval,
        Some(Err(e)) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                format!("interval is not valid: {e} (expected a duration such as 100ms)"),
            );
        }
    };
    let (tx, body) = ChannelBody::new();
    tokio::spawn(async move {
        for i in 1..=n {
            tokio::time::sleep(interval).await;
            if tx
                .send(Bytes::from(format!("data: event {i}\n\n")))
                .await
                .is_err()
            {
                return; // the client went away
            }
        }
    });
    let mut response = reply::with_type(StatusCode::OK, body.boxed_unsync(), "text/event-stream");
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `/status/{code}`: that status, with a short body.
pub fn status(code: &str) -> Response<Body> {
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    let Some(status) = status else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            format!("status {code:?} is not valid: expected a number from 200 to 599"),
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let mut response = Response::new(reply::full(Bytes::new()));
        *response.status_mut() = status;
        return response;
    }
    let message = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    reply::text(status, message.trim_end())
}

/// Reads a body to its end, counting data bytes without keeping them.
async fn count_body(mut body: Incoming) -> Result<u64, String> {
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("cannot read the request body: {e}"))?;
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}
