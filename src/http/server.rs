//! The HTTP server side of a listener: one hyper-util builder that speaks
//! HTTP/1.1 and HTTP/2 (h2c prior knowledge, or h2 after ALPN) on the same
//! connection type, with the header limits of the config applied equally.

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config::HttpConfig;

/// HTTP/2 counts 32 bytes of overhead per field (RFC 9113 §6.5.2) that
/// HTTP/1 does not; allow for it so the same headers pass both ways.
const H2_FIELD_OVERHEAD: usize = 32;

/// Fields hyper's HTTP/1 parser holds in a stack array; naming any limit
/// moves every parse to a heap buffer.
const H1_STACK_HEADERS: usize = 100;

/// Header limits as the servers and clients apply them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// Largest header block in bytes.
    pub max_bytes: usize,
    /// Most header fields.
    pub max_count: usize,
}

impl HeaderLimits {
    /// The limits a config asks for.
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            max_bytes: http.max_header_bytes.as_usize(),
            max_count: *http.max_headers.get(),
        }
    }

    /// The same limits plus room for `extra` fields that a proxy adds on
    /// the way (identity, forwarding trail), so a request admitted by one
    /// sidecar is never refused by the next.
    pub fn with_headroom(self, extra: usize) -> Self {
        Self {
            max_bytes: self.max_bytes + extra * 512,
            max_count: self.max_count + extra,
        }
    }

    /// Applies the field count to a hyper HTTP/1 builder, only when it is
    /// above hyper's default of 100, which then enforces it without an
    /// allocation per message.
    pub fn h1_max_headers(self) -> Option<usize> {
        (self.max_count > H1_STACK_HEADERS).then_some(self.max_count)
    }

    /// `SETTINGS_MAX_HEADER_LIST_SIZE` equivalent to these limits.
    pub fn h2_list_size(self) -> u32 {
        let size = self.max_bytes + self.max_count * H2_FIELD_OVERHEAD;
        u32::try_from(size).unwrap_or(u32::MAX)
    }
}

/// A server builder for HTTP/1.1 and HTTP/2 with these header limits and
/// the keep-alive settings of `http`. The header read, idle, age and body
/// bounds are enforced around it ([`super::lifetime`]), so hyper's own
/// HTTP/1.1 header timer, which would count the idle time before a request
/// as header time (and keep a timer per idle connection), is off.
pub fn builder(limits: HeaderLimits, http: &HttpConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // hyper needs at least 8 KiB; the config check enforces that.
        .max_buf_size(limits.max_bytes.max(8192));
    if let Some(max) = limits.h1_max_headers() {
        http1.max_headers(max);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.h2_list_size())
        // Bound the work a peer can cause with reset floods (CVE-2023-44487).
        .max_pending_accept_reset_streams(Some(20))
        .max_concurrent_streams(Some(1024))
        // Upgrades (WebSockets) across the HTTP/2 mesh link (RFC 8441).
        .enable_connect_protocol()
        // A peer gone without a FIN is noticed within two intervals.
        .keep_alive_interval(Some(http.h2_keepalive.0))
        .keep_alive_timeout(http.h2_keepalive.0);
    builder
}
