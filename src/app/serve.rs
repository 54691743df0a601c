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
use crate::drain;
use crate::http::lifetime::{self, Activity, HeadDeadline};
use crate::http::{Body, Direction, ErrorFormat, ProxyError};
use crate::listener::{Metered, accept_loop, admit, tune};
use crate::metrics::ListenerCounters;
use crate::tls::ALPN_H2;

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
        tokio::spawn(serve_outbound(tcp, addr, live.clone(), watch.clone()));
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

async fn serve_outbound(
    tcp: Metered<TcpStream>,
    addr: SocketAddr,
    live: Live,
    watch: drain::Watch,
) {
    tune(tcp.get_ref());
    let Some(outbound) = live.outbound() else {
        return;
    };
    let timeouts = outbound.timeouts();
    let activity = Activity::new();
    let io = HeadDeadline::new(tcp, activity.clone(), timeouts.header_read, None);
    let requests = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let in_flight = requests.begin();
        let current = live.outbound();
        // Boxed: hyper keeps a slot of the future's size for every
        // connection (HTTP/1) and moves it into a task per stream (HTTP/2);
        // a pointer is cheaper to keep idle and to move.
        Box::pin(async move {
            let response = match current {
                Some(outbound) => outbound.handle(req, addr).await,
                None => not_serving(Direction::Outbound, &req),
            };
            Ok::<_, Infallible>(lifetime::until_sent(
                response,
                in_flight,
                timeouts.body_idle,
            ))
        })
    });
    let connection = outbound.http().serve_connection(TokioIo::new(io), service);
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
    let service = service_fn(move |req: Request<Incoming>| {
        let in_flight = requests.begin();
        let current = live.inbound();
        let peer = peer.clone();
        // Boxed, as on the outbound side.
        Box::pin(async move {
            let response = match current {
                Some(inbound) => inbound.handle(req, &peer).await,
                None => not_serving(Direction::Inbound, &req),
            };
            Ok::<_, Infallible>(lifetime::until_sent(
                response,
                in_flight,
                timeouts.body_idle,
            ))
        })
    });
    let connection = inbound.http().serve_connection(TokioIo::new(io), service);
    if let Err(e) = lifetime::supervise(connection, &activity, timeouts, watch).await {
        debug!(peer = %addr, error = %e, "inbound connection ended with an error");
    }
}

/// For requests on a connection whose side a config reload removed.
fn not_serving(direction: Direction, req: &Request<Incoming>) -> Response<Body> {
    ProxyError::NotServing.to_response(direction, ErrorFormat::of(req.headers()))
}
