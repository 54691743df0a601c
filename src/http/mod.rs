//! HTTP pieces shared by both directions: the body type, the proxy's own
//! error responses, header rules, and client/server connection set-up.

pub mod body;
pub mod dial;
pub mod error;
pub mod grpc;
pub mod h1_pool;
pub mod h2_client;
pub mod head_scan;
pub mod headers;
pub mod lifetime;
pub mod limit;
pub mod outcome;
pub mod path;
pub mod plain_client;
pub mod replay;
pub mod request_id;
pub mod server;
pub mod upgrade;
pub mod uri;

pub use body::{Body, BoxError};
pub use error::{DenyReason, Direction, ERROR_HEADER, ErrorFormat, ProxyError, Reason};
