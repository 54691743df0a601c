//! One accepted connection, from socket to HTTP: each request is handled by
//! the inbound or outbound side *in force when it arrives*, so a config
//! reload reaches long-lived connections (the HTTP/2 link between sidecars
//! lives for hours) without closing them.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::Live;
use crate::detect::{By, Prefixed, Protocol, detect};
use crate::drain;
use crate::http::lifetime::{self, Activity, HeadDeadline, InFlight};
use crate::http::{Body, Direction, ErrorFormat, ProxyError};
use crate::listener::{Metered, accept_loop, admit, original_dst, tune};
use crate::metrics::ListenerCounters;
use crate::outbound::CapturedTo;
use crate::tls::ALPN_H2;
use crate::tunnel::Lent;

/// Accepts app connections until aborted, up to the outbound listener's
/// `max_connections`.
pub async fn accept_outbound(
    listener: TcpListener,
    live: Live,
    watch: drain::Watch,
    counters: ListenerCounters,
) {
    accept_loop(&listener, "outbound", |tcp, addr| {
        let cap = live.outbound().map_or(usize::MAX, |o| o.max_connections());
        if !admit(&counters, cap, "outbound") {
            return; // dropped: closed at once
        }
        let tcp = Metered::new(tcp, counters.clone());
        let serve = serve_outbound(tcp, addr, live.clone(), watch.clone(), counters.clone());
        tokio::spawn(serve);
    })
    .await;
}

/// Accepts mesh connections until aborted, up to the inbound listener's
/// `max_connections`.
pub async fn accept_inbound(
    listener: TcpListener,
    live: Live,
    watch: drain::Watch,
    counters: ListenerCounters,
) {
    accept_loop(&listener, "inbound", |tcp, addr| {
        let cap = live.inbound().map_or(usize::MAX, |i| i.max_connections());
        if !admit(&counters, cap, "inbound") {
            return;
        }
        let tcp = Metered::new(tcp, counters.clone());
        tokio::spawn(serve_inbound(tcp, addr, live.clone(), watch.clone()));
    })
    .await;
}

/// Accepts the app's raw TCP connections for the opaque destination
/// listening at `configured`, up to the outbound listener's
/// `max_connections`.
pub async fn accept_opaque(
    listener: TcpListener,
    configured: SocketAddr,
    live: Live,
    watch: drain::Watch,
    counters: ListenerCounters,
) {
    accept_loop(&listener, "opaque", |tcp, addr| {
        let Some(outbound) = live.outbound() else {
            return;
        };
        if !admit(&counters, outbound.max_connections(), "opaque") {
            return;
        }
        tune(&tcp);
        let tcp = Metered::new(tcp, counters.clone());
        let watch = watch.clone();
        tokio::spawn(async move {
            outbound.carry(Box::new(tcp), addr, configured, watch).await;
        });
    })
    .await;
}

/// Accepts clients of the gateway's plain HTTP (`tls` false) or HTTPS
/// listener, up to the gateway's `max_connections` for each.
pub async fn accept_gateway(
    listener: TcpListener,
    tls: bool,
    live: Live,
    watch: drain::Watch,
    counters: ListenerCounters,
) {
    let name = if tls { "gateway-tls" } else { "gateway" };
    accept_loop(&listener, name, |tcp, addr| {
        let cap = live.gateway().map_or(usize::MAX, |g| g.max_connections());
        if !admit(&counters, cap, name) {
            return;
        }
        let tcp = Metered::new(tcp, counters.clone());
        tokio::spawn(serve_gateway(tcp, addr, tls, live.clone(), watch.clone()));
    })
    .await;
}

/// A client of the gateway: the TLS handshake on the HTTPS listener, then
/// HTTP/1.1 or HTTP/2 (by ALPN, or by the first bytes on plain HTTP).
async fn serve_gateway(
    tcp: Metered<TcpStream>,
    addr: SocketAddr,
    tls: bool,
    live: Live,
    watch: drain::Watch,
) {
    tune(tcp.get_ref());
    let Some(gateway) = live.gateway() else {
        return;
    };
    let timeouts = gateway.timeouts();
    let activity = Activity::new();
    let requests = activity.clone();
    let lend = watch.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let in_flight = requests.begin();
        lend_for_tunnel(&mut req, &lend);
        let current = live.gateway();
        Box::pin(async move {
            let connect = req.method() == http::Method::CONNECT;
            let response = match current {
                Some(gateway) => gateway.handle(req, addr, tls).await,
                None => not_serving(Direction::Gateway, &req),
            };
            switched(&response, connect, &in_flight);
            Ok::<_, Infallible>(lifetime::until_sent(
                response,
                in_flight,
                timeouts.body_idle,
            ))
        })
    });
    let served = if tls {
        let Some(stream) = gateway.handshake(tcp, addr).await else {
            return;
        };
        let http2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
        let io = HeadDeadline::new(stream, activity.clone(), timeouts.header_read, Some(http2));
        let connection = gateway
            .http()
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        lifetime::supervise(connection, &activity, timeouts, watch).await
    } else {
        let io = HeadDeadline::new(tcp, activity.clone(), timeouts.header_read, None);
        let connection = gateway
            .http()
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        lifetime::supervise(connection, &activity, timeouts, watch).await
    };
    if let Err(e) = served {
        debug!(peer = %addr, error = %e, "gateway connection ended with an error");
    }
}

/// An app connection: HTTP, unless it was captured on its way elsewhere
/// and its first bytes (or its port) say otherwise, when it is carried
/// as it is.
async fn serve_outbound(
    tcp: Metered<TcpStream>,
    addr: SocketAddr,
    live: Live,
    watch: drain::Watch,
    counters: ListenerCounters,
) {
    tune(tcp.get_ref());
    let Some(outbound) = live.outbound() else {
        return;
    };
    let captured = original_dst(tcp.get_ref());
    let io = match captured {
        None => Prefixed::new(tcp),
        Some(original) => {
            let (protocol, by, io) = if outbound.is_opaque_port(original.port()) {
                (Protocol::Opaque, By::Port, Prefixed::new(tcp))
            } else {
                // Boxed, like the captured path below: kept inline, their
                // state would size every connection's future, captured or
                // not (an idle connection cost 3 KiB more).
                match Box::pin(detect(tcp, outbound.detect_timeout())).await {
                    Ok(detected) => detected,
                    Err(e) => {
                        debug!(peer = %addr, error = %e, "captured connection failed before its first bytes");
                        return;
                    }
                }
            };
            counters.detected(protocol.as_str(), by.as_str());
            debug!(peer = %addr, %original, protocol = protocol.as_str(), by = by.as_str(), "captured connection");
            if let Protocol::Tls | Protocol::Opaque = protocol {
                Box::pin(outbound.carry_captured(Box::new(io), addr, original, watch)).await;
                return;
            }
            io
        }
    };
    let timeouts = outbound.timeouts();
    let activity = Activity::new();
    let io = HeadDeadline::new(io, activity.clone(), timeouts.header_read, None);
    let requests = activity.clone();
    let lend = watch.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let in_flight = requests.begin();
        lend_for_tunnel(&mut req, &lend);
        if let Some(original) = captured {
            // Where the app meant it to go, for a host no route knows.
            req.extensions_mut().insert(CapturedTo(original));
        }
        let current = live.outbound();
        // Boxed: hyper keeps a slot of the future's size for every
        // connection (HTTP/1) and moves it into a task per stream (HTTP/2);
        // a pointer is cheaper to keep idle and to move.
        Box::pin(async move {
            let connect = req.method() == http::Method::CONNECT;
            let response = match current {
                Some(outbound) => outbound.handle(req, addr).await,
                None => not_serving(Direction::Outbound, &req),
            };
            switched(&response, connect, &in_flight);
            Ok::<_, Infallible>(lifetime::until_sent(
                response,
                in_flight,
                timeouts.body_idle,
            ))
        })
    });
    let connection = outbound
        .http()
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = lifetime::supervise(connection, &activity, timeouts, watch).await {
        debug!(peer = %addr, error = %e, "outbound connection ended with an error");
    }
}

async fn serve_inbound(tcp: Metered<TcpStream>, addr: SocketAddr, live: Live, watch: drain::Watch) {
    tune(tcp.get_ref());
    let Some(inbound) = live.inbound() else {
        return;
    };
    let Some((stream, peer)) = inbound.handshake(tcp, addr).await else {
        return;
    };
    let timeouts = inbound.timeouts();
    let activity = Activity::new();
    let http2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let io = HeadDeadline::new(stream, activity.clone(), timeouts.header_read, Some(http2));
    let requests = activity.clone();
    let lend = watch.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let in_flight = requests.begin();
        lend_for_tunnel(&mut req, &lend);
        let current = live.inbound();
        let peer = peer.clone();
        // Boxed, as on the outbound side.
        Box::pin(async move {
            let connect = req.method() == http::Method::CONNECT;
            let response = match current {
                Some(inbound) => inbound.handle(req, &peer).await,
                None => not_serving(Direction::Inbound, &req),
            };
            switched(&response, connect, &in_flight);
            Ok::<_, Infallible>(lifetime::until_sent(
                response,
                in_flight,
                timeouts.body_idle,
            ))
        })
    });
    let connection = inbound
        .http()
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = lifetime::supervise(connection, &activity, timeouts, watch).await {
        debug!(peer = %addr, error = %e, "inbound connection ended with an error");
    }
}

/// Tells the connection's guard when a response switches it to a tunnel
/// (a 101; a CONNECT's 2xx on HTTP/1.1): its bytes are no longer heads.
fn switched(response: &Response<Body>, connect: bool, in_flight: &InFlight) {
    let status = response.status();
    if status == http::StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
        in_flight.activity().switch();
    }
}

/// Lends the connection's drain watch to a request that may open a tunnel
/// (a CONNECT, an upgrade): an upgraded connection's own serving ends at
/// the switch, and the tunnel must keep the drain waiting instead.
fn lend_for_tunnel(req: &mut Request<Incoming>, watch: &drain::Watch) {
    if req.method() == http::Method::CONNECT || req.headers().contains_key(http::header::UPGRADE) {
        req.extensions_mut().insert(Lent(watch.clone()));
    }
}

/// For requests on a connection whose side a config reload removed.
fn not_serving(direction: Direction, req: &Request<Incoming>) -> Response<Body> {
    ProxyError::NotServing.to_response(direction, ErrorFormat::of(req.headers()))
}
