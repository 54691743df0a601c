//! What the sidecar records about each request, in one place: its ids,
//! this hop's span, and its access log line.
//!
//! [`Observer::begin`] settles the ids and starts the span when a request
//! arrives; the [`Exchange`] it returns collects what the request path
//! learns (route, upstream, attempts, error); [`Exchange::finish`] stamps
//! the ids on the response and, when a span is recorded or the access log
//! is on, follows the response body to its last byte, then ends the span
//! and writes the line. With both off, nothing is gathered.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanContext, SpanKind};

use crate::access_log::{AccessLog, Entry};
use crate::build::BuildError;
use crate::config::Config;
use crate::http::request_id::{RequestIdHeaders, RequestIds};
use crate::http::{Body, BoxError, Direction, ERROR_HEADER};
use crate::metrics::Metrics;
use crate::trace::{Exporter, Span, Tracer};

/// The error of an exchange whose client left before the response's end.
const CLIENT_GONE: &str = "client-gone";

/// The tracing, access log and request id settings of one config
/// generation.
#[derive(Debug)]
pub struct Observer {
    tracer: Arc<Tracer>,
    access_log: AccessLog,
    ids: RequestIdHeaders,
}

impl Observer {
    /// The observer of `config`. The span exporter of `previous` is kept
    /// when its settings did not change, with the spans it has queued.
    pub fn build(
        config: &Config,
        metrics: &Metrics,
        previous: Option<&Observer>,
    ) -> Result<Self, BuildError> {
        let service = config.service.as_str();
        let exporter = match &config.tracing.otlp {
            Some(otlp) => {
                let kept = previous
                    .and_then(|p| p.tracer.exporter())
                    .filter(|e| e.serves(otlp, service, &config.namespace));
                Some(match kept {
                    Some(exporter) => exporter.clone(),
                    None => Exporter::start(
                        otlp,
                        service,
                        &config.namespace,
                        metrics.telemetry.clone(),
                    )?,
                })
            }
            None => None,
        };
        let ids = RequestIdHeaders::new(&config.request_ids.correlation_header)
            .map_err(|e| BuildError::config(format!("request_ids.correlation_header: {e}")))?;
        Ok(Self {
            tracer: Arc::new(Tracer::new(&config.tracing, exporter)),
            access_log: AccessLog::new(config.access_log.format, &metrics.telemetry),
            ids,
        })
    }

    /// The tracer.
    pub fn tracer(&self) -> &Arc<Tracer> {
        &self.tracer
    }

    /// Starts observing a request as it arrives: keeps or makes its ids
    /// (leaving them in its headers for the app and upstream), reads the
    /// caller's trace context and starts this hop's span.
    pub fn begin<B>(self: &Arc<Self>, direction: Direction, req: &mut Request<B>) -> Exchange {
        let ids = self.ids.ensure(req.headers_mut());
        let caller = self.tracer.extract(req.headers());
        let kind = match direction {
            // The gateway serves clients from outside: the trace's first
            // server span, as an ingress's.
            Direction::Inbound | Direction::Gateway => SpanKind::Server,
            Direction::Outbound => SpanKind::Client,
        };
        let mut span = self.tracer.start(&caller, kind, span_name(req.method()));
        let authority = authority(req);
        if span.is_recording() {
            span_request_attributes(&mut span, direction, req, authority, &ids);
        }
        let log = self.access_log.is_on().then(|| LogFields {
            method: req.method().clone(),
            authority: authority.map(str::to_owned),
            path: req.uri().path().to_owned(),
            protocol: req.version(),
            user_agent: req
                .headers()
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        Exchange {
            observer: self.clone(),
            direction,
            arrived: SystemTime::now(),
            start: Instant::now(),
            ids,
            span,
            log: log.map(Box::new),
            labels: Labels::default(),
            bytes_in: None,
            status: 0,
        }
    }
}

/// The access log fields taken from the request.
#[derive(Debug)]
struct LogFields {
    method: Method,
    authority: Option<String>,
    path: String,
    protocol: Version,
    user_agent: Option<String>,
}

/// What the request path learned, for the log line and the span.
#[derive(Debug, Default)]
struct Labels {
    service: Option<Arc<str>>,
    route: Option<Arc<str>>,
    peer: Option<Arc<str>>,
    client: Option<std::net::IpAddr>,
    user: Option<Arc<str>>,
    upstream: Option<SocketAddr>,
    attempts: Option<u32>,
    error: Option<Cow<'static, str>>,
}

/// One request being observed, from arrival to the response's last byte.
#[derive(Debug)]
pub struct Exchange {
    observer: Arc<Observer>,
    direction: Direction,
    arrived: SystemTime,
    start: Instant,
    ids: RequestIds,
    span: Span,
    log: Option<Box<LogFields>>,
    labels: Labels,
    bytes_in: Option<Arc<AtomicU64>>,
    status: u16,
}

impl Exchange {
    /// Whether anything is recorded at the end (a span or a log line).
    fn records(&self) -> bool {
        self.log.is_some() || self.span.is_recording()
    }

    /// The request's ids.
    pub fn ids(&self) -> &RequestIds {
        &self.ids
    }

    /// This hop's span context, the parent of what it sends on.
    pub fn span_context(&self) -> &SpanContext {
        self.span.context()
    }

    /// The tracer, for spans of attempts.
    pub fn tracer(&self) -> &Arc<Tracer> {
        &self.observer.tracer
    }

    /// Writes this hop's span context into the headers sent on.
    pub fn inject(&self, headers: &mut HeaderMap) {
        self.observer.tracer.inject(headers, self.span.context());
    }

    /// The request matched `service` (and `route`, outbound).
    pub fn routed(&mut self, service: &str, route: Option<&Arc<str>>) {
        if self.records() {
            self.labels.service = Some(service.into());
            self.labels.route = route.cloned();
            self.span.set("pilotfish.service", service.to_string());
            if let Some(route) = route {
                self.span.set("pilotfish.route", route.to_string());
            }
        }
    }

    /// The calling workload (inbound).
    pub fn peer(&mut self, identity: &str, addr: SocketAddr) {
        if self.records() {
            self.labels.peer = Some(identity.into());
            self.span
                .set("pilotfish.peer.identity", identity.to_owned());
            self.span.set("client.address", addr.ip().to_string());
            self.span.set("client.port", i64::from(addr.port()));
        }
    }

    /// The gateway's client: its address (as the trusted hops tell it).
    pub fn client(&mut self, addr: std::net::IpAddr) {
        if self.records() {
            self.labels.client = Some(addr);
            self.span.set("client.address", addr.to_string());
        }
    }

    /// The subject of the gateway client's verified token.
    pub fn user(&mut self, subject: &str) {
        if self.records() {
            self.labels.user = Some(subject.into());
            self.span.set("enduser.id", subject.to_owned());
        }
    }

    /// Where the request went, after how many attempts.
    pub fn upstream(&mut self, endpoint: Option<SocketAddr>, attempts: u32) {
        self.labels.upstream = endpoint;
        self.labels.attempts = Some(attempts);
        if !self.span.is_recording() {
            return;
        }
        if let Some(endpoint) = endpoint {
            self.span
                .set("network.peer.address", endpoint.ip().to_string());
            self.span
                .set("network.peer.port", i64::from(endpoint.port()));
        }
        if self.direction != Direction::Inbound {
            self.span
                .set("pilotfish.retries", i64::from(attempts.saturating_sub(1)));
        }
    }

    /// The proxy failed the request for `reason` (a `pilotfish-error` value).
    pub fn failed(&mut self, reason: &'static str) {
        self.labels.error = Some(Cow::Borrowed(reason));
        self.span.set("pilotfish.error", reason);
        self.span.set("error.type", reason);
        self.span.fail(reason);
    }

    /// Wraps the request body to count its bytes, when they are logged.
    pub fn count_request(&mut self, body: hyper::body::Incoming) -> Body {
        if self.log.is_none() {
            return Body::Incoming(body);
        }
        let count = Arc::new(AtomicU64::new(0));
        self.bytes_in = Some(count.clone());
        Body::Boxed(Counted { inner: body, count }.boxed_unsync())
    }

    /// Stamps the ids on the response; when anything is recorded, follows
    /// its body to the end and then records.
    pub fn finish(mut self, mut response: Response<Body>) -> Response<Body> {
        self.observer.ids.stamp(response.headers_mut(), &self.ids);
        if !self.records() {
            return response;
        }
        self.status = response.status().as_u16();
        if self.labels.error.is_none() {
            // An error the far sidecar answered with.
            if let Some(reason) = response.headers().get(ERROR_HEADER) {
                let reason = reason.to_str().unwrap_or("invalid").to_owned();
                self.span.set("pilotfish.error", reason.clone());
                self.labels.error = Some(Cow::Owned(reason));
            }
        }
        let status = response.status();
        self.span
            .set("http.response.status_code", i64::from(status.as_u16()));
        // Server spans fail on 5xx only; client spans on 4xx too.
        let failed = match self.direction {
            Direction::Inbound | Direction::Gateway => status.is_server_error(),
            Direction::Outbound => status.is_client_error() || status.is_server_error(),
        };
        if failed && self.labels.error.is_none() {
            self.span.set("error.type", status.as_str().to_owned());
            self.span.fail(status.as_str().to_owned());
        }
        response.map(|body| {
            Body::Boxed(
                Observed {
                    inner: body,
                    exchange: Some(Box::new(self)),
                    bytes: 0,
                }
                .boxed_unsync(),
            )
        })
    }

    /// Stamps the ids on the response that opens a tunnel (101, or 200 to
    /// a CONNECT); the span and the log line wait for the tunnel's end.
    pub fn into_tunnel(mut self, mut response: Response<Body>) -> (Response<Body>, TunnelRecord) {
        self.observer.ids.stamp(response.headers_mut(), &self.ids);
        self.status = response.status().as_u16();
        self.span
            .set("http.response.status_code", i64::from(self.status));
        (response, TunnelRecord(Box::new(self)))
    }

    /// Ends the span and writes the log line.
    fn record(mut self, bytes_out: u64, gone: bool) {
        if gone && self.labels.error.is_none() {
            self.labels.error = Some(Cow::Borrowed(CLIENT_GONE));
            self.span.set("pilotfish.error", CLIENT_GONE);
        }
        let Some(log) = self.log.take() else {
            return; // the span ends as it drops
        };
        let context = self.span.context();
        let labels = &self.labels;
        let entry = Entry {
            timestamp: Entry::timestamp(self.arrived),
            direction: self.direction.as_str(),
            service: labels.service.as_deref(),
            route: labels.route.as_deref(),
            method: log.method.as_str(),
            authority: log.authority.as_deref(),
            path: &log.path,
            protocol: protocol(log.protocol),
            status: self.status,
            duration_ms: Entry::millis(self.start.elapsed()),
            bytes_in: self
                .bytes_in
                .as_ref()
                .map_or(0, |count| count.load(Ordering::Relaxed)),
            bytes_out,
            upstream: labels.upstream,
            attempts: labels.attempts,
            peer: labels.peer.as_deref(),
            client: labels.client,
            user: labels.user.as_deref(),
            trace_id: context.trace_id().to_string(),
            span_id: context.span_id().to_string(),
            sampled: context.is_sampled(),
            request_id: self.ids.request_id(),
            correlation_id: self.ids.correlation_id(),
            user_agent: log.user_agent.as_deref(),
            error: labels.error.as_deref(),
        };
        self.observer.access_log.write(&entry);
    }
}

/// An exchange whose response opened a tunnel: recorded when the tunnel
/// ends, with what it carried each way and how long it lived.
#[derive(Debug)]
pub struct TunnelRecord(Box<Exchange>);

impl TunnelRecord {
    /// The tunnel ended after carrying `sent` bytes from the client and
    /// `received` back; `error` says why, when it did not simply close.
    pub fn done(self, sent: u64, received: u64, error: Option<&'static str>) {
        let mut exchange = *self.0;
        exchange.bytes_in = Some(Arc::new(AtomicU64::new(sent)));
        if let Some(error) = error
            && exchange.labels.error.is_none()
        {
            exchange.failed(error);
        }
        exchange.record(received, false);
    }
}

/// The span's name: the method, or `HTTP` for one outside the standard
/// set (the semantic conventions' rule, which keeps names bounded).
pub(crate) fn span_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "HTTP",
    }
}

fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The attributes the OpenTelemetry HTTP conventions ask of the request.
fn span_request_attributes<B>(
    span: &mut Span,
    direction: Direction,
    req: &Request<B>,
    authority: Option<&str>,
    ids: &RequestIds,
) {
    span.set("http.request.method", req.method().as_str().to_owned());
    span.set("pilotfish.direction", direction.as_str());
    let path = req.uri().path().to_owned();
    if let Some(authority) = authority {
        let (host, port) = split_authority(authority);
        span.set("server.address", host.to_owned());
        if let Some(port) = port {
            span.set("server.port", i64::from(port));
        }
        if direction == Direction::Outbound {
            // Without the query, which may carry secrets.
            span.set("url.full", format!("http://{authority}{path}"));
        }
    }
    span.set("url.path", path);
    // The gateway set X-Forwarded-Proto itself, from its own listener.
    let https = direction == Direction::Gateway
        && req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v == "https");
    span.set("url.scheme", if https { "https" } else { "http" });
    span.set(
        "network.protocol.version",
        match req.version() {
            Version::HTTP_2 => "2",
            Version::HTTP_10 => "1.0",
            _ => "1.1",
        },
    );
    if let Some(agent) = req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()) {
        span.set("user_agent.original", agent.to_owned());
    }
    span.set("pilotfish.request_id", ids.request_id().to_owned());
    span.set("pilotfish.correlation_id", ids.correlation_id().to_owned());
}

fn split_authority(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// A request body that counts the bytes it passes.
struct Counted {
    inner: hyper::body::Incoming,
    count: Arc<AtomicU64>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that records its exchange when it ends, or when it is
/// dropped unfinished (the client went away).
struct Observed {
    inner: Body,
    exchange: Option<Box<Exchange>>,
    bytes: u64,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut exchange) = this.exchange.take() {
                    exchange.failed("upstream-reset");
                    exchange.record(this.bytes, false);
                }
            }
            Poll::Ready(None) => {
                if let Some(exchange) = this.exchange.take() {
                    exchange.record(this.bytes, false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(exchange) = self.exchange.take() {
            // hyper drops a body it knew was empty without polling it.
            let gone = !http_body::Body::is_end_stream(&self.inner);
            exchange.record(self.bytes, gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_authority("users:8080"), ("users", Some(8080)));
        assert_eq!(split_authority("users"), ("users", None));
        assert_eq!(split_authority("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
        assert_eq!(split_authority("users:http"), ("users:http", None));
    }

    #[test]
    fn span_names_stay_bounded() {
        assert_eq!(span_name(&Method::GET), "GET");
        assert_eq!(span_name(&Method::from_bytes(b"PURGE").unwrap()), "HTTP");
    }
}
