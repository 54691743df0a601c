//! The three demo services' own endpoints: `users` answers from fake data,
//! `notifications` counts what it is sent, and `orders` calls both (through
//! its sidecar) and combines the answers, or creates an order and
//! publishes an event for it (see [`super::events`]); called through the
//! edge gateway, orders also says who signed in (`signed_in`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::downstream::Call;
use super::events::{self, Broker};
use super::reply::{self, Body};

/// Largest notification body accepted.
const MAX_NOTIFICATION_BYTES: usize = 64 * 1024;

const FIRST_NAMES: [&str; 8] = [
    "Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Margaret",
];
const LAST_NAMES: [&str; 6] = [
    "Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen",
];
const ITEMS: [&str; 5] = ["teapot", "kettle", "mug", "tea tin", "saucer"];

/// `GET /users/{id}`: a fake user, always the same for the same id.
pub fn user(id: &str) -> Response<Body> {
    match id.parse::<u64>() {
        Ok(id) => reply::json(StatusCode::OK, &fake_user(id)),
        Err(_) => reply::error(
            StatusCode::BAD_REQUEST,
            format!("user id {id:?} is not valid: expected a number"),
        ),
    }
}

fn fake_user(id: u64) -> Value {
    let pick = |list: &[&'static str], n: u64| list[(n % list.len() as u64) as usize];
    let first = pick(&FIRST_NAMES, id);
    let last = pick(&LAST_NAMES, id / FIRST_NAMES.len() as u64);
    json!({
        "id": id,
        "name": format!("{first} {last}"),
        "email": format!("{}.{}{id}@example.com", first.to_lowercase(), last.to_lowercase()),
    })
}

/// `POST /notifications` queues a JSON notification (202 with its number);
/// `GET /notifications` tells how many were sent.
pub async fn notifications(sent: &AtomicU64, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::GET {
        let count = sent.load(Ordering::Relaxed);
        return reply::json(StatusCode::OK, &json!({ "sent": count }));
    }
    let body = match Limited::new(req.into_body(), MAX_NOTIFICATION_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "cannot read the notification (at most {MAX_NOTIFICATION_BYTES} bytes): {e}"
                ),
            );
        }
    };
    if let Err(e) = serde_json::from_slice::<Value>(&body) {
        return reply::error(
            StatusCode::BAD_REQUEST,
            format!("the notification is not JSON: {e}"),
        );
    }
    let id = sent.fetch_add(1, Ordering::Relaxed) + 1;
    reply::json(StatusCode::ACCEPTED, &json!({ "queued": true, "id": id }))
}

/// `GET /orders/{id}`: the order, its user (from `users`) and the result of
/// notifying them (from `notifications`); 502 naming the call that failed.
pub async fn order(id: &str, headers: &HeaderMap, sidecar: Option<SocketAddr>) -> Response<Body> {
    let Ok(order_id) = id.parse::<u64>() else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            format!("order id {id:?} is not valid: expected a number"),
        );
    };
    let Some(sidecar) = sidecar else {
        return no_sidecar();
    };
    let user_id = order_id % 10 + 1;
    let user = match call(get_user(user_id, headers), sidecar).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let notify = Call {
        service: "notifications",
        method: Method::POST,
        path: "/notifications".to_owned(),
        body: Some(json!({
            "to": user.get("email"),
            "message": format!("order {order_id} has shipped"),
        })),
        headers,
    };
    let notification = match call(notify, sidecar).await {
        Ok(notification) => notification,
        Err(response) => return response,
    };
    let order = fake_order(order_id, user_id);
    let mut value = json!({ "order": order, "user": user, "notification": notification });
    if let Some(caller) = signed_in(headers) {
        value["signed_in"] = caller;
    }
    reply::json(StatusCode::OK, &value)
}

/// Who called, when the request came through the edge gateway with a
/// token: the gateway sets `x-user-id` (the token's `sub`) and
/// `x-user-roles` from it, having removed any a client sent.
fn signed_in(headers: &HeaderMap) -> Option<Value> {
    let field = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let user = field("x-user-id")?;
    Some(json!({ "x-user-id": user, "x-user-roles": field("x-user-roles") }))
}

/// What `POST /orders` needs of the service.
#[derive(Debug)]
pub struct NewOrder<'a> {
    /// Its sidecar's outbound listener, to call users.
    pub sidecar: Option<SocketAddr>,
    /// The broker to publish to, if events are on.
    pub broker: Option<&'a Broker>,
    /// The id of the last order created.
    pub last_id: &'a AtomicU64,
}

/// `POST /orders`: a new order (the next id) for its user (from `users`),
/// announced by an `order-created` event on the broker; 201. Without a
/// broker the order is made all the same and the answer says no event was
/// published; a broker that fails gives 502 naming it.
pub async fn create_order(new: NewOrder<'_>, headers: &HeaderMap) -> Response<Body> {
    let Some(sidecar) = new.sidecar else {
        return no_sidecar();
    };
    let order_id = new.last_id.fetch_add(1, Ordering::Relaxed) + 1;
    let user_id = order_id % 10 + 1;
    let user = match call(get_user(user_id, headers), sidecar).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    let order = fake_order(order_id, user_id);
    let event = match new.broker {
        None => json!({
            "published": false,
            "why": "events are off: orders was started without --redis",
        }),
        Some(broker) => match broker.publish(&events::order_created(&order, &user)).await {
            Ok(entry) => json!({
                "published": true,
                "type": events::ORDER_CREATED,
                "stream": events::STREAM,
                "entry": entry,
            }),
            Err(e) => {
                let what = format!("XADD {} (Redis at {})", events::STREAM, broker.addr());
                let failure = json!({
                    "error": format!("cannot publish {} for order {order_id}", events::ORDER_CREATED),
                    "call": what,
                    "detail": e.to_string(),
                });
                return reply::json(StatusCode::BAD_GATEWAY, &failure);
            }
        },
    };
    let mut value = json!({ "order": order, "user": user, "event": event });
    if let Some(caller) = signed_in(headers) {
        value["signed_in"] = caller;
    }
    reply::json(StatusCode::CREATED, &value)
}

fn no_sidecar() -> Response<Body> {
    reply::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "orders was started without --sidecar, so it cannot call users or notifications",
    )
}

fn get_user(user_id: u64, headers: &HeaderMap) -> Call<'_> {
    Call {
        service: "users",
        method: Method::GET,
        path: format!("/users/{user_id}"),
        body: None,
        headers,
    }
}

fn fake_order(order_id: u64, user_id: u64) -> Value {
    json!({
        "id": order_id,
        "item": ITEMS[(order_id % ITEMS.len() as u64) as usize],
        "quantity": order_id % 3 + 1,
        "user_id": user_id,
    })
}

/// Makes a call; a failure becomes the 502 the caller answers with.
async fn call(call: Call<'_>, sidecar: SocketAddr) -> Result<Value, Response<Body>> {
    let what = call.describe();
    call.send(sidecar)
        .await
        .map_err(|e| reply::json(StatusCode::BAD_GATEWAY, &e.to_json(&what)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_in_user_is_what_the_gateway_said() {
        let mut headers = HeaderMap::new();
        assert_eq!(signed_in(&headers), None);
        headers.insert("x-user-id", http::HeaderValue::from_static("alice"));
        headers.insert("x-user-roles", http::HeaderValue::from_static("admin"));
        assert_eq!(
            signed_in(&headers),
            Some(json!({ "x-user-id": "alice", "x-user-roles": "admin" }))
        );
    }

    #[test]
    fn fake_users_are_deterministic_and_distinct() {
        assert_eq!(fake_user(7), fake_user(7));
        assert_ne!(fake_user(7)["name"], fake_user(8)["name"]);
        assert_eq!(fake_user(1)["name"], "Grace Lovelace");
        assert_eq!(fake_user(1)["email"], "grace.lovelace1@example.com");
    }
}
