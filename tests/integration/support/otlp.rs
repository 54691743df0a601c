//! An OTLP trace receiver in the test process: the sidecar exports its spans
//! to it over gRPC (`TraceService/Export`) or HTTP/protobuf (`POST
//! /v1/traces`), and tests assert on what arrived (trace ids, parent links,
//! kinds, names, attributes), flattened into [`ReceivedSpan`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{
    Span, span::SpanKind as ProtoKind, status::StatusCode as ProtoStatus,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Which OTLP transport the receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: `/opentelemetry.proto.collector.trace.v1.TraceService/Export`.
    Grpc,
    /// HTTP/protobuf: `POST /v1/traces`.
    Http,
}

/// A span's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// An attribute's value; arrays, maps and bytes are `Other` (their debug form).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    String(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Other(String),
}

/// A span as received, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The resource attribute `service.name` (empty when absent).
    pub service_name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub attributes: BTreeMap<String, AttrValue>,
    /// The status code is ERROR.
    pub status_error: bool,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

impl ReceivedSpan {
    /// The string attribute `key`, if present and a string.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key)? {
            AttrValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer attribute `key`, if present and an integer.
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// What the receiver has recorded, shared with its server tasks.
#[derive(Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: AtomicUsize,
}

impl Store {
    fn record(&self, request: ExportTraceServiceRequest) {
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            let service_name = match attributes(&resource.attributes).remove("service.name") {
                Some(AttrValue::String(name)) => name,
                _ => String::new(),
            };
            for scope in resource_spans.scope_spans {
                received.extend(scope.spans.into_iter().map(|s| flatten(&service_name, s)));
            }
        }
        self.spans.lock().expect("spans lock").extend(received);
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

fn flatten(service_name: &str, span: Span) -> ReceivedSpan {
    let kind = match ProtoKind::try_from(span.kind).unwrap_or(ProtoKind::Unspecified) {
        ProtoKind::Unspecified => SpanKind::Unspecified,
        ProtoKind::Internal => SpanKind::Internal,
        ProtoKind::Server => SpanKind::Server,
        ProtoKind::Client => SpanKind::Client,
        ProtoKind::Producer => SpanKind::Producer,
        ProtoKind::Consumer => SpanKind::Consumer,
    };
    ReceivedSpan {
        service_name: service_name.to_owned(),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
        name: span.name,
        kind,
        attributes: attributes(&span.attributes),
        status_error: span
            .status
            .is_some_and(|s| s.code == ProtoStatus::Error as i32),
        start_unix_nanos: span.start_time_unix_nano,
        end_unix_nanos: span.end_time_unix_nano,
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, AttrValue> {
    let value = |v: &Option<AnyValue>| match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => AttrValue::String(s.clone()),
        Some(Value::IntValue(i)) => AttrValue::Int(*i),
        Some(Value::BoolValue(b)) => AttrValue::Bool(*b),
        Some(Value::DoubleValue(d)) => AttrValue::Double(*d),
        other => AttrValue::Other(format!("{other:?}")),
    };
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The gRPC side.
struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.record(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The HTTP/protobuf side.
async fn http_export(store: Arc<Store>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let status = |code: StatusCode| {
        let mut response = Response::new(Full::default());
        *response.status_mut() = code;
        response
    };
    if req.uri().path() != "/v1/traces" {
        return status(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::POST {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let Ok(body) = req.into_body().collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(request) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    store.record(request);
    let body = ExportTraceServiceResponse::default().encode_to_vec();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// A running receiver on 127.0.0.1 (a port chosen by the OS); stops, with
/// every connection it holds, when dropped.
pub struct OtlpReceiver {
    protocol: Protocol,
    addr: SocketAddr,
    store: Arc<Store>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts a receiver speaking `protocol` (HTTP/1.1 and h2c either way).
    pub async fn start(protocol: Protocol) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let store = Arc::new(Store::default());
        let grpc = TraceServiceServer::new(Grpc(store.clone()));
        let shared = store.clone();
        let task = tokio::spawn(async move {
            // Owned here, so aborting this task closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let io = TokioIo::new(stream);
                let builder = auto::Builder::new(TokioExecutor::new());
                match protocol {
                    Protocol::Grpc => {
                        let svc = TowerToHyperService::new(grpc.clone());
                        connections.spawn(async move {
                            let _ = builder.serve_connection(io, svc).await;
                        });
                    }
                    Protocol::Http => {
                        let store = shared.clone();
                        let svc = service_fn(move |req| {
                            let store = store.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(http_export(store, req).await)
                            }
                        });
                        connections.spawn(async move {
                            let _ = builder.serve_connection(io, svc).await;
                        });
                    }
                }
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            protocol,
            addr,
            store,
            task,
        }
    }

    /// The endpoint for the sidecar's config: `http://127.0.0.1:PORT` for
    /// gRPC, `http://127.0.0.1:PORT/v1/traces` for HTTP.
    pub fn endpoint(&self) -> String {
        match self.protocol {
            Protocol::Grpc => format!("http://{}", self.addr),
            Protocol::Http => format!("http://{}/v1/traces", self.addr),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// All spans received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().expect("spans lock").clone()
    }

    /// How many export requests arrived so far (batching versus nothing).
    pub fn requests(&self) -> usize {
        self.store.requests.load(Ordering::SeqCst)
    }

    /// The spans of trace `trace_id` (lowercase hex).
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Polls until `pred(&spans)` holds and returns the spans; panics,
    /// listing what did arrive, if it does not within `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = spans
                    .iter()
                    .map(|s| {
                        format!(
                            "  {} {:?} trace={} span={} parent={:?}",
                            s.name, s.kind, s.trace_id, s.span_id, s.parent_span_id
                        )
                    })
                    .collect();
                panic!(
                    "OTLP receiver: condition not met within {timeout:?}; {} requests, {} spans:\n{}",
                    self.requests(),
                    spans.len(),
                    seen.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    const TRACE: [u8; 16] = [0xab; 16];

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    /// A server span (root, with attributes) and its failed client child.
    fn request() -> ExportTraceServiceRequest {
        let root = Span {
            trace_id: TRACE.to_vec(),
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            name: "inbound".into(),
            kind: ProtoKind::Server as i32,
            attributes: vec![
                kv("http.route", Value::StringValue("/echo".into())),
                kv("http.response.status_code", Value::IntValue(200)),
                kv("tls", Value::BoolValue(true)),
            ],
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            ..Span::default()
        };
        let child = Span {
            span_id: vec![0xff; 8],
            parent_span_id: root.span_id.clone(),
            name: "outbound".into(),
            kind: ProtoKind::Client as i32,
            attributes: vec![],
            status: Some(Status {
                code: ProtoStatus::Error as i32,
                ..Status::default()
            }),
            ..root.clone()
        };
        let resource = Resource {
            attributes: vec![kv("service.name", Value::StringValue("frontend".into()))],
            ..Resource::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    spans: vec![root, child],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    async fn check(receiver: &OtlpReceiver) {
        let spans = receiver
            .wait_for(Duration::from_secs(5), |s| s.len() == 2)
            .await;
        assert_eq!(receiver.requests(), 1);
        let trace_id = "ab".repeat(16);
        assert_eq!(receiver.trace(&trace_id).len(), 2);
        let (root, child) = (&spans[0], &spans[1]);
        assert_eq!(root.service_name, "frontend");
        assert_eq!(root.trace_id, trace_id);
        assert_eq!(root.span_id, "0102030405060708");
        assert_eq!(root.parent_span_id, None);
        assert_eq!(
            (root.name.as_str(), root.kind),
            ("inbound", SpanKind::Server)
        );
        assert_eq!(root.attr_str("http.route"), Some("/echo"));
        assert_eq!(root.attr_int("http.response.status_code"), Some(200));
        assert_eq!(root.attributes.get("tls"), Some(&AttrValue::Bool(true)));
        assert!(!root.status_error);
        assert_eq!((root.start_unix_nanos, root.end_unix_nanos), (10, 20));
        assert_eq!(child.parent_span_id.as_deref(), Some("0102030405060708"));
        assert_eq!(
            (child.span_id.as_str(), child.kind),
            ("ffffffffffffffff", SpanKind::Client)
        );
        assert!(child.status_error);
    }

    #[tokio::test]
    async fn otlp_receiver_grpc() {
        let receiver = OtlpReceiver::start(Protocol::Grpc).await;
        let mut client = TraceServiceClient::connect(receiver.endpoint())
            .await
            .expect("connect to receiver");
        client.export(request()).await.expect("export");
        check(&receiver).await;
    }

    async fn post(addr: SocketAddr, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::post(path)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = sender.send_request(req).await.expect("response");
        let status = response.status();
        (
            status,
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes(),
        )
    }

    #[tokio::test]
    async fn otlp_receiver_http() {
        let receiver = OtlpReceiver::start(Protocol::Http).await;
        assert_eq!(
            receiver.endpoint(),
            format!("http://{}/v1/traces", receiver.addr())
        );
        let (status, body) = post(receiver.addr(), "/v1/traces", request().encode_to_vec()).await;
        assert_eq!(status, StatusCode::OK);
        ExportTraceServiceResponse::decode(body).expect("protobuf response");
        check(&receiver).await;
        let (status, _) = post(receiver.addr(), "/v1/logs", vec![]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = post(receiver.addr(), "/v1/traces", vec![0xff, 0xff]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(receiver.requests(), 1);
    }
}
