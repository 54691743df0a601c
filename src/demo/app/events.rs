//! Order events through a broker, the demo's asynchronous path: `orders`
//! publishes `order-created` to the Redis stream `orders` (XADD), and
//! `notifications` reads it as the consumer group `notifications`
//! (XREADGROUP), acknowledging each entry (XACK) once it has delivered it.
//! Delivery is at least once: an entry read but not acknowledged (the
//! connection broke in between) is read again after the reconnection,
//! before new ones, and an entry seen twice is not delivered twice.
//!
//! Like the HTTP calls, this holds no mesh logic: the app knows a Redis
//! address (`--redis`), which in the demo is a local address of its own
//! sidecar that carries the bytes across the mesh.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Response, StatusCode};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncConnectionConfig, AsyncTypedCommands as _, RedisError};
use serde_json::{Value, json};

use super::reply::{self, Body};

/// The stream of order events.
pub const STREAM: &str = "orders";
/// The consumer group notifications reads it as.
pub const GROUP: &str = "notifications";
/// The type of the one event there is.
pub const ORDER_CREATED: &str = "order-created";
/// How long one XREADGROUP waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);
/// Longest wait to connect, and for a publish's answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before the consumer connects again after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// Entries read per XREADGROUP.
const BATCH: usize = 16;
/// Deliveries kept for `GET /notifications/events`.
const RECENT: usize = 50;

/// The broker a service uses, at the address it was given.
#[derive(Debug)]
pub struct Broker {
    addr: SocketAddr,
    client: redis::Client,
    /// The publisher's connection: made on first use, dropped on an error.
    publisher: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Broker {
    /// The broker at `addr`; no connection is made yet.
    pub fn new(addr: SocketAddr) -> Result<Self, RedisError> {
        Ok(Self {
            addr,
            client: redis::Client::open(format!("redis://{addr}/"))?,
            publisher: tokio::sync::Mutex::new(None),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn connect(&self, answer_within: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(answer_within));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Appends an event to the stream; its entry id. A kept connection
    /// that fails is replaced once (the broker or the path to it may have
    /// restarted since), so an event may be appended twice: consumers
    /// tolerate that.
    pub async fn publish(&self, fields: &[(&'static str, String)]) -> Result<String, RedisError> {
        let mut held = self.publisher.lock().await;
        let reused = held.is_some();
        match self.append(&mut held, fields).await {
            Err(_) if reused => self.append(&mut held, fields).await,
            result => result,
        }
    }

    async fn append(
        &self,
        held: &mut Option<MultiplexedConnection>,
        fields: &[(&'static str, String)],
    ) -> Result<String, RedisError> {
        let connection = match held {
            Some(connection) => connection,
            None => held.insert(self.connect(TIMEOUT).await?),
        };
        let appended = connection.xadd(STREAM, "*", fields).await;
        if appended.is_err() {
            *held = None;
        }
        // Without NOMKSTREAM, XADD always answers an id.
        Ok(appended?.unwrap_or_default())
    }
}

/// The fields of an `order-created` event for `order` and its `user`.
pub fn order_created(order: &Value, user: &Value) -> Vec<(&'static str, String)> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    vec![
        ("type", ORDER_CREATED.to_owned()),
        ("order_id", text(&order["id"])),
        ("item", text(&order["item"])),
        ("quantity", text(&order["quantity"])),
        ("user_id", text(&order["user_id"])),
        ("email", text(&user["email"])),
    ]
}

/// What notifications has delivered from the stream.
#[derive(Debug)]
pub struct Inbox {
    consumer: String,
    state: Mutex<InboxState>,
}

#[derive(Debug, Default)]
struct InboxState {
    delivered: u64,
    duplicates: u64,
    recent: VecDeque<Value>,
    connected: bool,
    last_error: Option<String>,
}

impl Inbox {
    /// An empty inbox read as the consumer `consumer` of the group.
    pub fn new(consumer: String) -> Self {
        Self {
            consumer,
            state: Mutex::new(InboxState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers one entry (here: records it and says so in the log),
    /// unless it was delivered already.
    fn deliver(&self, entry: &StreamId) {
        let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
        let notification = json!({
            "entry": entry.id,
            "type": field("type"),
            "order_id": field("order_id").parse::<u64>().ok(),
            "to": field("email"),
            "message": format!(
                "order {} created: {} x {}",
                field("order_id"),
                field("quantity"),
                field("item")
            ),
        });
        let mut state = self.state();
        if state.recent.iter().any(|n| n["entry"] == entry.id.as_str()) {
            state.duplicates += 1;
            return;
        }
        eprintln!(
            "events: delivered {} from {STREAM} entry {}: {}",
            field("type"),
            entry.id,
            notification["message"]
        );
        state.delivered += 1;
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back(notification);
    }
}

/// Reads the stream into `inbox` for as long as the service runs,
/// connecting again a second after any failure.
pub fn spawn_consumer(broker: Arc<Broker>, inbox: Arc<Inbox>) {
    tokio::spawn(async move {
        loop {
            let Err(e) = consume(&broker, &inbox).await;
            eprintln!(
                "events: no broker at {} ({e}); trying again in {}s",
                broker.addr,
                RETRY.as_secs()
            );
            {
                let mut state = inbox.state();
                state.connected = false;
                state.last_error = Some(e.to_string());
            }
            tokio::time::sleep(RETRY).await;
        }
    });
}

/// One connection's worth of consuming: join the group (made with the
/// stream if new, from the stream's start so that no event published
/// before is missed), read this consumer's unacknowledged entries, then
/// new ones.
async fn consume(broker: &Broker, inbox: &Inbox) -> Result<Infallible, RedisError> {
    let mut connection = broker.connect(BLOCK + TIMEOUT).await?;
    match connection.xgroup_create_mkstream(STREAM, GROUP, "0").await {
        Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
        _ => {}
    }
    eprintln!(
        "events: consuming stream {STREAM} as {} of group {GROUP} at {}",
        inbox.consumer, broker.addr
    );
    {
        let mut state = inbox.state();
        state.connected = true;
        state.last_error = None;
    }
    let block = usize::try_from(BLOCK.as_millis()).unwrap_or(usize::MAX);
    let options = StreamReadOptions::default()
        .group(GROUP, &inbox.consumer)
        .count(BATCH)
        .block(block);
    // "0": entries this consumer was given before and has not
    // acknowledged; ">": entries no consumer of the group has had.
    let mut from = "0";
    loop {
        let reply = connection
            .xread_options(&[STREAM], &[from], &options)
            .await?;
        let entries: Vec<StreamId> = reply
            .map(|r: StreamReadReply| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if entries.is_empty() {
            from = ">";
        }
        for entry in entries {
            inbox.deliver(&entry);
            connection.xack(STREAM, GROUP, &[&entry.id]).await?;
        }
    }
}

/// `GET /notifications/events`: whether events are on, and what was
/// delivered from the stream.
pub fn endpoint(broker: Option<&Broker>, inbox: &Inbox) -> Response<Body> {
    let Some(broker) = broker else {
        return reply::json(
            StatusCode::OK,
            &json!({
                "events": "off",
                "why": "notifications was started without --redis: there is no broker to read order events from",
            }),
        );
    };
    let state = inbox.state();
    let value = json!({
        "events": "on",
        "broker": broker.addr.to_string(),
        "stream": STREAM,
        "group": GROUP,
        "consumer": inbox.consumer,
        "connected": state.connected,
        "last_error": state.last_error,
        "delivered": state.delivered,
        "duplicates_skipped": state.duplicates,
        "recent": state.recent,
    });
    reply::json(StatusCode::OK, &value)
}
