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
use crate::http::{Body, Direction, ErrorFormat, ProxyError};
use crate::listener::{Metered, accept_loop};
use crate::metrics::ListenerCounters;

/// Accepts app connections until aborted.
pub async fn accept_outbound(
    listener: TcpListener,
    live: Live,
    watch: drain::Watch,
    counters: ListenerCounters,
) {
    accept_loop(&listener, "outbound", |tcp, addr| {
        let tcp = Metered::new(tcp, counters.clone());
        tokio::spawn(serve_outbound(tcp, addr, live.clone(), watch.clone()));
    })
    .await;
}

/// Accepts mesh connections until aborted.
pub async fn accept_inbound(
    listener: TcpListener,
    live: Live,
    watch: drain::Watch,
    counters: ListenerCounters,
) {
    accept_loop(&listener, "inbound", |tcp, addr| {
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
    let _ = tcp.get_ref().set_nodelay(true);
    let Some(outbound) = live.outbound() else {
        return;
    };
    let service = service_fn(move |req: Request<Incoming>| {
        let current = live.outbound();
        // Boxed: hyper keeps a slot of the future's size for every
        // connection (HTTP/1) and moves it into a task per stream (HTTP/2);
        // a pointer is cheaper to keep idle and to move.
        Box::pin(async move {
            Ok::<_, Infallible>(match current {
                Some(outbound) => outbound.handle(req, addr).await,
                None => not_serving(Direction::Outbound, &req),
            })
        })
    });
    let connection = outbound.http().serve_connection(TokioIo::new(tcp), service);
    if let Err(e) = watch.serve(connection).await {
        debug!(peer = %addr, error = %e, "outbound connection ended with an error");
    }
}

async fn serve_inbound(tcp: Metered<TcpStream>, addr: SocketAddr, live: Live, watch: drain::Watch) {
    let Some(inbound) = live.inbound() else {
        return;
    };
    let Some((stream, peer)) = inbound.handshake(tcp, addr).await else {
        return;
    };
    let service = service_fn(move |req: Request<Incoming>| {
        let current = live.inbound();
        let peer = peer.clone();
        // Boxed, as on the outbound side.
        Box::pin(async move {
            Ok::<_, Infallible>(match current {
                Some(inbound) => inbound.handle(req, &peer).await,
                None => not_serving(Direction::Inbound, &req),
            })
        })
    });
    let connection = inbound
        .http()
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watch.serve(connection).await {
        debug!(peer = %addr, error = %e, "inbound connection ended with an error");
    }
}

/// For requests on a connection whose side a config reload removed.
fn not_serving(direction: Direction, req: &Request<Incoming>) -> Response<Body> {
    ProxyError::NotServing.to_response(direction, ErrorFormat::of(req.headers()))
}
