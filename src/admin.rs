//! The admin listener: `/live`, `/ready`, `/metrics`, `/config`,
//! `/destinations`, `/log-level` (`POST /log-level?level=debug`
//! changes the diagnostic log filter until the next restart or a config
//! reload that changes `log.level`), and `POST /shutdown` (drains and
//! exits, as SIGTERM: how a Job's app ends its sidecar when it is done).
//!
//! Plain HTTP/1.1, meant for loopback or the pod network only. In a pod
//! it listens on the pod address so the kubelet's probes and Prometheus
//! reach it; what they read is safe to show (`/config` hides secrets).
//! What changes the sidecar (every method but GET and HEAD) is answered
//! only for loopback callers: the containers of the pod, or an operator
//! through `kubectl port-forward`, which arrives on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tracing::debug;

use crate::config::Config;
use crate::http::Body;
use crate::outbound::Outbound;
use crate::telemetry::LogControl;

/// The state in force, as the admin endpoints read it. The app implements
/// it for its handle on that state, so this module needs nothing of how
/// the state is kept and swapped on reloads, nor `app` itself (which
/// starts this listener).
pub trait StateView: std::fmt::Debug + Send + Sync {
    /// The config in force, and when it was loaded.
    fn config(&self) -> (Arc<Config>, SystemTime);
    /// The outbound side in force, if configured.
    fn outbound(&self) -> Option<Arc<Outbound>>;
}

/// Where the sidecar is in its life, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Listeners or certificates not yet in place.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// SIGTERM received: finishing in-flight requests.
    Draining = 2,
}

/// What the admin endpoints report.
#[derive(Debug)]
pub struct AdminState {
    phase: AtomicU8,
    /// Notified by `POST /shutdown`.
    stop: tokio::sync::Notify,
    registry: Registry,
    live: Box<dyn StateView>,
    log: Option<LogControl>,
}

impl AdminState {
    /// Reports on the state in force (`live`) and the metrics of
    /// `registry`; `log`, when given, lets `/log-level` change the filter.
    pub fn new(
        live: impl StateView + 'static,
        registry: Registry,
        log: Option<LogControl>,
    ) -> Self {
        Self {
            phase: AtomicU8::new(Phase::Starting as u8),
            stop: tokio::sync::Notify::new(),
            registry,
            live: Box::new(live),
            log,
        }
    }

    /// Resolves once `POST /shutdown` was asked (a request made before
    /// this is awaited counts too).
    pub async fn shutdown_asked(&self) {
        self.stop.notified().await;
    }

    /// `GET /log-level` shows the filter, `POST /log-level?level=F` sets it.
    fn log_level(&self, req: &Request<Incoming>) -> Response<Body> {
        let Some(log) = &self.log else {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "the log filter cannot be changed in this process\n",
            );
        };
        if req.method() != Method::POST {
            let current = log.filter().unwrap_or_else(|| "unknown".to_owned());
            return text(StatusCode::OK, &format!("{current}\n"));
        }
        let level = req.uri().query().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("level="))
                .map(percent_decode)
        });
        let Some(level) = level.filter(|l| !l.is_empty()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "give the filter as ?level=, like ?level=debug or ?level=info,pilotfish::outbound=debug\n",
            );
        };
        match log.set_filter(&level) {
            Ok(()) => {
                tracing::info!(filter = %level, "log filter changed through the admin port");
                text(StatusCode::OK, &format!("{level}\n"))
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        }
    }

    /// Every destination with its endpoints, their health and load, and
    /// its breaker, as JSON.
    fn destinations_json(&self) -> String {
        let now = tokio::time::Instant::now();
        let statuses: Vec<_> = self
            .live
            .outbound()
            .map(|o| o.destinations().iter().map(|d| d.status(now)).collect())
            .unwrap_or_default();
        serde_json::to_string_pretty(&statuses)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The config in force as YAML, with its load time; secrets (a
    /// password in a URL, a header value that is someone's key) hidden.
    fn config_yaml(&self) -> String {
        let (config, loaded_at) = self.live.config();
        let yaml = serde_saphyr::to_string(&config.redacted())
            .unwrap_or_else(|e| format!("# the config could not be shown: {e}\n"));
        format!(
            "# effective config, loaded at {}\n{yaml}",
            humantime::format_rfc3339_seconds(loaded_at)
        )
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }
}

/// How long an admin client has to send its request's headers, and how
/// long its connection may then sit idle: probes and scrapes send at once.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Most admin connections at once: probes, a scraper and an operator need
/// a handful; more is someone holding connections open.
const ADMIN_MAX_CONNECTIONS: usize = 128;

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_MAX_CONNECTIONS));
    crate::listener::accept_loop(&listener, "admin", |tcp, peer| {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "admin connection refused: {ADMIN_MAX_CONNECTIONS} open");
            return;
        };
        crate::listener::tune(&tcp);
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&req, peer, &state)) }
            });
            let mut http = http1::Builder::new();
            // Without a timer hyper enforces no header timeout at all.
            http.timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT);
            if let Err(e) = http.serve_connection(TokioIo::new(tcp), service).await {
                debug!(error = %e, "admin connection failed");
            }
        });
    })
    .await;
}

fn respond(req: &Request<Incoming>, peer: SocketAddr, state: &AdminState) -> Response<Body> {
    let reads = req.method() == Method::GET || req.method() == Method::HEAD;
    if !reads && !peer.ip().is_loopback() {
        return text(
            StatusCode::FORBIDDEN,
            "changes through the admin port are for loopback callers only: \
             a container of the pod, or kubectl port-forward\n",
        );
    }
    if req.uri().path() == "/log-level" {
        return state.log_level(req);
    }
    if req.uri().path() == "/shutdown" {
        if req.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST /shutdown to drain and exit\n",
            );
        }
        tracing::info!("shutdown asked through the admin port");
        // notify_one keeps the permit if nobody waits yet.
        state.stop.notify_one();
        return text(StatusCode::ACCEPTED, "draining, then exiting\n");
    }
    if !reads {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => match state.phase() {
            Phase::Ready => text(StatusCode::OK, "ready\n"),
            Phase::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: starting\n"),
            Phase::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n"),
        },
        "/metrics" => metrics(&state.registry),
        "/destinations" => with_type(
            StatusCode::OK,
            state.destinations_json(),
            "application/json",
        ),
        "/config" => with_type(
            StatusCode::OK,
            state.config_yaml(),
            "application/yaml; charset=utf-8",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /metrics, /config, /destinations, /log-level or POST /shutdown\n",
        ),
    }
}

fn metrics(registry: &Registry) -> Response<Body> {
    let encoder = TextEncoder::new();
    let mut buffer = Vec::new();
    match encoder.encode(&registry.gather(), &mut buffer) {
        Ok(()) => with_type(
            StatusCode::OK,
            buffer,
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode metrics: {e}\n"),
        ),
    }
}

/// `%XX` escapes and `+` of a query value, decoded.
fn percent_decode(value: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some((high, low)), _) => {
                // Two hex digits make one byte.
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: impl Into<bytes::Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("debug"), "debug");
        assert_eq!(
            percent_decode("info%2Cpilotfish%3A%3Aoutbound%3Ddebug"),
            "info,pilotfish::outbound=debug"
        );
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%é"), "%zz%é");
    }
}
