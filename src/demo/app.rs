//! The demo services (`pilotfish demo-app --name users|orders|notifications`),
//! which `pilotfish demo` runs behind its sidecars.
//!
//! They are deliberately plain: HTTP/1.1 and h2c on loopback, no TLS, no
//! retries, no timeouts, no tracing. Everything the mesh does happens in the
//! sidecars, and these apps show how little a service needs to know about
//! it. The one meshed-app duty they carry out is copying trace headers from
//! each incoming request onto the calls it makes (see [`downstream`]).
//!
//! Endpoints (every service): `GET /health`, `GET|POST /echo`,
//! `GET /bytes?n=N`, `POST /upload`, `GET /sse?n=5&interval=100ms`,
//! `/status/{code}`, `GET|POST /knobs`, `GET /stats` (requests served, to
//! see how the mesh spreads them). Per service: `GET /users/{id}`;
//! `GET|POST /notifications`, `GET /notifications/events`;
//! `GET /orders/{id}`, `POST /orders`. Failure knobs (see [`knobs`]) apply
//! to every request except `/health`, `/knobs` and `/stats`.
//!
//! With `--redis`, orders publishes an event for each order it creates
//! and notifications consumes them (see [`events`]); without it they say
//! that events are off, and serve HTTP all the same.

pub mod downstream;
pub mod events;
pub mod generic;
pub mod knobs;
pub mod reply;
pub mod services;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use self::knobs::Knobs;
use self::reply::Body;

/// Options of a demo service.
#[derive(Debug, clap::Args)]
pub struct AppArgs {
    /// Which service: users, orders or notifications. Any other name gets
    /// only the endpoints every service has.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Address to serve HTTP/1.1 and h2c on, such as 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The outbound listener of this service's own sidecar; orders calls
    /// users and notifications through it.
    #[arg(long, value_name = "ADDR")]
    pub sidecar: Option<SocketAddr>,
    /// A Redis server for order events: orders publishes one to the stream
    /// `orders` for each order it creates, notifications reads that stream
    /// as a consumer group. Without it, events are off.
    #[arg(long, value_name = "ADDR")]
    pub redis: Option<SocketAddr>,
}

/// What a running service knows.
#[derive(Debug)]
struct State {
    name: String,
    sidecar: Option<SocketAddr>,
    knobs: Mutex<Knobs>,
    notifications_sent: AtomicU64,
    /// Orders made by `POST /orders`, the last one's id.
    orders_created: AtomicU64,
    broker: Option<Arc<events::Broker>>,
    /// What notifications delivered from the broker.
    inbox: Arc<events::Inbox>,
    /// Requests that reached the knobs (all but `/health`, `/knobs`,
    /// `/stats`).
    requests: AtomicU64,
}

/// Runs a demo service until it is killed.
pub fn run(args: AppArgs) -> anyhow::Result<()> {
    let knobs = Knobs::from_env()?;
    let broker = match args.redis {
        Some(addr) => Some(Arc::new(
            events::Broker::new(addr).with_context(|| format!("--redis {addr}"))?,
        )),
        None => None,
    };
    // Named after its address, so a restarted replica gets back the
    // entries it was given but had not acknowledged.
    let consumer = format!("{}@{}", args.name, args.listen);
    let state = Arc::new(State {
        name: args.name,
        sidecar: args.sidecar,
        knobs: Mutex::new(knobs),
        notifications_sent: AtomicU64::new(0),
        orders_created: AtomicU64::new(0),
        broker,
        inbox: Arc::new(events::Inbox::new(consumer)),
        requests: AtomicU64::new(0),
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(args.listen, state))
}

async fn serve(addr: SocketAddr, state: Arc<State>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    eprintln!("demo service {} listening on {bound}", state.name);
    start_events(&state);
    let http = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { handle(&state, req).await }
            });
            if let Err(e) = http.serve_connection(TokioIo::new(tcp), service).await {
                eprintln!("connection ended with an error: {e}");
            }
        });
    }
}

/// Says whether events are on, and starts the consumer of notifications.
fn start_events(state: &State) {
    let (on, off) = match state.name.as_str() {
        "orders" => (
            "publishes an event for each order it creates",
            "publishes none",
        ),
        "notifications" => ("consumes the order events", "consumes none"),
        _ => return,
    };
    let Some(broker) = &state.broker else {
        eprintln!(
            "events: off (started without --redis): {} {off}",
            state.name
        );
        return;
    };
    eprintln!(
        "events: on: {} {on}, through the Redis server at {}",
        state.name,
        broker.addr()
    );
    if state.name == "notifications" {
        events::spawn_consumer(broker.clone(), state.inbox.clone());
    }
}

/// Answers one request: `/health`, `/knobs` and `/stats` first, then the
/// knobs, then the endpoint. An error drops the connection (the reset
/// knob).
async fn handle(state: &State, req: Request<Incoming>) -> Result<Response<Body>, knobs::Reset> {
    let path = req.uri().path();
    if path == "/health" && (req.method() == Method::GET || req.method() == Method::HEAD) {
        return Ok(reply::text(StatusCode::OK, "ok"));
    }
    if path == "/knobs" {
        return Ok(knobs::endpoint(
            &state.knobs,
            req.method(),
            req.uri().query(),
        ));
    }
    if path == "/stats" && req.method() == Method::GET {
        let requests = state.requests.load(Ordering::Relaxed);
        return Ok(reply::json(
            StatusCode::OK,
            &serde_json::json!({ "requests": requests }),
        ));
    }
    state.requests.fetch_add(1, Ordering::Relaxed);
    let service_wide = *state.knobs.lock().unwrap_or_else(PoisonError::into_inner);
    match service_wide.with_query(req.uri().query()) {
        Ok(knobs) => {
            if let Some(response) = knobs::apply(knobs).await? {
                return Ok(response);
            }
        }
        Err(e) => return Ok(reply::error(StatusCode::BAD_REQUEST, e)),
    }
    Ok(route(state, req).await)
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let query = req.uri().query();
    let method = req.method().clone();
    match (&method, state.name.as_str(), segments.as_slice()) {
        (&Method::GET | &Method::POST, _, ["echo"]) => generic::echo(&state.name, req).await,
        (&Method::GET, _, ["bytes"]) => generic::bytes(query),
        (&Method::POST, _, ["upload"]) => generic::upload(req).await,
        (&Method::GET, _, ["sse"]) => generic::sse(query),
        (_, _, ["status", code]) => generic::status(code),
        (&Method::GET, "users", ["users", id]) => services::user(id),
        (&Method::GET | &Method::POST, "notifications", ["notifications"]) => {
            services::notifications(&state.notifications_sent, req).await
        }
        (&Method::GET, "notifications", ["notifications", "events"]) => {
            events::endpoint(state.broker.as_deref(), &state.inbox)
        }
        (&Method::GET, "orders", ["orders", id]) => {
            services::order(id, req.headers(), state.sidecar).await
        }
        (&Method::POST, "orders", ["orders"]) => {
            let new = services::NewOrder {
                sidecar: state.sidecar,
                broker: state.broker.as_deref(),
                last_id: &state.orders_created,
            };
            services::create_order(new, req.headers()).await
        }
        _ => reply::error(
            StatusCode::NOT_FOUND,
            format!("service {} has no endpoint {method} {path}", state.name),
        ),
    }
}
