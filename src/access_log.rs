//! Access logs: one line per request on stdout, as JSON or readable text.
//! (Diagnostic logs go to stderr, so the two streams never mix.)
//!
//! A request formats its line and appends it to a buffer that a writer
//! thread empties into stdout every [`FLUSH_EVERY`] (sooner when
//! [`FLUSH_AT`] bytes wait): a request never waits on stdout, and wakes
//! no thread. Waking the writer for each line cost a futex call and a
//! context switch per request, which doubled a hop's CPU on 2 cores.
//! When stdout cannot keep up the line is dropped and counted
//! (`pilotfish_access_log_dropped_total`). [`flush`] writes what is left
//! at exit.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::AccessLogFormat;
use crate::metrics::TelemetryMetrics;

/// Longest a line waits for stdout (Envoy's default is 1 s).
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Bytes waiting that wake the writer before `FLUSH_EVERY`.
pub const FLUSH_AT: usize = 64 * 1024;
/// Bytes waiting past which new lines are dropped (stdout is stuck).
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// One request, as its access log line tells it. Every field is always
/// present in JSON (`null` when it does not apply), so the lines can be
/// loaded into a table as they are.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// When the request arrived (RFC 3339, UTC, microseconds).
    pub timestamp: String,
    /// `inbound` (mesh -> app), `outbound` (app -> mesh) or `gateway`
    /// (clients from outside -> mesh).
    pub direction: &'static str,
    /// Outbound: the destination service (`null` when no route matched);
    /// inbound: this service.
    pub service: Option<&'a str>,
    /// Outbound: the route's name.
    pub route: Option<&'a str>,
    /// The request method.
    pub method: &'a str,
    /// The authority (`Host`) the client asked for.
    pub authority: Option<&'a str>,
    /// The path, without the query (which often carries secrets).
    pub path: &'a str,
    /// `HTTP/1.1` or `HTTP/2.0`, as the client spoke.
    pub protocol: &'static str,
    /// The response status sent to the client.
    pub status: u16,
    /// From request received to the response's last byte sent.
    pub duration_ms: f64,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// The endpoint of the last attempt (outbound) or the app (inbound).
    pub upstream: Option<SocketAddr>,
    /// Attempts made (outbound; retries are attempts after the first).
    pub attempts: Option<u32>,
    /// The calling workload's SPIFFE id (inbound).
    pub peer: Option<&'a str>,
    /// Gateway: the client's address (the peer's, or as `trusted_hops`
    /// reads `X-Forwarded-For`).
    pub client: Option<IpAddr>,
    /// Gateway: the subject (`sub`) of the client's verified token.
    pub user: Option<&'a str>,
    /// The trace.
    pub trace_id: String,
    /// This sidecar's span for the request.
    pub span_id: String,
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// The correlation id.
    pub correlation_id: &'a str,
    /// The client's `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// The Pilotfish error reason (the `pilotfish-error` value), if the
    /// proxy, here or at the far sidecar, failed the request.
    pub error: Option<&'a str>,
}

impl Entry<'_> {
    /// The timestamp field of a request that arrived at `at`.
    pub fn timestamp(at: SystemTime) -> String {
        humantime::format_rfc3339_micros(at).to_string()
    }

    /// The duration field.
    pub fn millis(took: Duration) -> f64 {
        // Microsecond precision is what a log reader can use.
        (took.as_secs_f64() * 1e6).round() / 1e3
    }

    fn json(&self, line: &mut Vec<u8>) {
        // Serializing plain fields cannot fail.
        let _ = serde_json::to_writer(&mut *line, self);
        line.push(b'\n');
    }

    fn text(&self, line: &mut Vec<u8>) {
        let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
        let _ = writeln!(
            line,
            "{} {} {} {} {} {} {} {} {}ms in={} out={} upstream={} attempts={} peer={} client={} user={} trace={} span={} request_id={} correlation_id={} error={}",
            self.timestamp,
            self.direction,
            self.service.unwrap_or("-"),
            self.method,
            self.authority.unwrap_or("-"),
            self.path,
            self.protocol,
            self.status,
            self.duration_ms,
            self.bytes_in,
            self.bytes_out,
            self.upstream
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            self.attempts
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            dash(self.peer),
            self.client
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            dash(self.user),
            self.trace_id,
            self.span_id,
            self.request_id,
            self.correlation_id,
            dash(self.error),
        );
    }
}

/// The access log of one config generation.
#[derive(Debug, Clone)]
pub struct AccessLog {
    format: AccessLogFormat,
    sink: Option<Arc<Sink>>,
}

impl AccessLog {
    /// Writes lines in `format` (nothing for `off`).
    pub fn new(format: AccessLogFormat, metrics: &TelemetryMetrics) -> Self {
        let sink = (format != AccessLogFormat::Off).then(|| Sink::stdout(metrics));
        Self { format, sink }
    }

    /// Whether lines are written: gather their fields only then.
    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// Writes `entry`'s line (or drops and counts it if stdout is behind).
    pub fn write(&self, entry: &Entry<'_>) {
        let Some(sink) = &self.sink else {
            return;
        };
        let mut line = Vec::with_capacity(512);
        match self.format {
            AccessLogFormat::Json => entry.json(&mut line),
            AccessLogFormat::Text => entry.text(&mut line),
            AccessLogFormat::Off => return,
        }
        sink.send(&line);
    }
}

/// The lines waiting for the writer thread. One per process: there is one
/// stdout.
#[derive(Debug)]
struct Sink {
    pending: Mutex<Pending>,
    /// The writer waits here for the first line, or for `FLUSH_AT` bytes.
    wake: Condvar,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: TelemetryMetrics,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// No more lines will be written: at exit, or stdout is gone.
    closed: bool,
}

static STDOUT: OnceLock<Arc<Sink>> = OnceLock::new();

impl Sink {
    fn stdout(metrics: &TelemetryMetrics) -> Arc<Self> {
        STDOUT
            .get_or_init(|| {
                let sink = Arc::new(Sink::new(metrics.clone()));
                let writer = sink.clone();
                let spawned = std::thread::Builder::new()
                    .name("access-log".to_owned())
                    .spawn(move || writer.write_to(&mut std::io::stdout()));
                match spawned {
                    Ok(handle) => *sink.writer() = Some(handle),
                    Err(e) => tracing::error!("cannot start the access log writer: {e}"),
                }
                sink
            })
            .clone()
    }

    fn new(metrics: TelemetryMetrics) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            writer: Mutex::new(None),
            metrics,
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, line: &[u8]) {
        let mut pending = self.pending();
        if pending.closed || pending.bytes.len() + line.len() > MAX_PENDING {
            drop(pending);
            self.metrics.access_log_dropped();
            return;
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        let after = pending.bytes.len();
        drop(pending);
        // Only the first line of a batch, or the one that fills it, wakes
        // the writer: at most a few wake-ups a second under any load.
        if before == 0 || (before < FLUSH_AT && after >= FLUSH_AT) {
            self.wake.notify_one();
        }
    }

    /// The writer thread: waits for a line, gathers lines for up to
    /// `FLUSH_EVERY` (or until `FLUSH_AT` bytes), writes them in one go.
    /// When stdout refuses them (a full disk, a closed pipe), the lines are
    /// counted as dropped, the failure is logged once, and later batches
    /// are tried again: logging resumes by itself when there is room.
    fn write_to(&self, out: &mut impl Write) {
        let mut batch = Vec::with_capacity(FLUSH_AT);
        let mut writer = Writer::default();
        loop {
            let mut pending = self.pending();
            while pending.bytes.is_empty() && !pending.closed {
                pending = self
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let deadline = Instant::now() + FLUSH_EVERY;
            while pending.bytes.len() < FLUSH_AT && !pending.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                pending = self
                    .wake
                    .wait_timeout(pending, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            let closed = pending.closed;
            drop(pending);
            let lost = writer.write(out, &batch);
            if lost > 0 {
                self.metrics.access_log_dropped_by(lost);
            }
            batch.clear();
            if closed && self.pending().bytes.is_empty() {
                return;
            }
        }
    }

    /// Stops taking lines and waits until the writer wrote the last ones.
    fn close(&self) {
        self.pending().closed = true;
        self.wake.notify_one();
        if let Some(writer) = self.writer().take() {
            let _ = writer.join();
        }
    }
}

/// What the writer thread remembers between batches.
#[derive(Debug, Default)]
struct Writer {
    /// The last write stopped inside a line, which must be ended before
    /// the next line starts.
    mid_line: bool,
    /// The failure being reported, so it is logged once.
    failing: bool,
}

impl Writer {
    /// Writes whole lines; returns how many were lost (a line written in
    /// part counts as lost).
    fn write(&mut self, out: &mut impl Write, batch: &[u8]) -> u64 {
        let mut written = 0;
        let result = (|| {
            if self.mid_line {
                out.write_all(b"\n")?;
                self.mid_line = false;
            }
            while written < batch.len() {
                match out.write(&batch[written..]) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            out.flush()
        })();
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the access log can be written again");
                }
                0
            }
            Err(e) => {
                let rest = &batch[written..];
                if written > 0 {
                    self.mid_line = batch[written - 1] != b'\n';
                }
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(
                        "the access log cannot be written ({e}); its lines are dropped and \
                         counted in pilotfish_access_log_dropped_total until it can"
                    );
                }
                rest.iter().filter(|b| **b == b'\n').count() as u64
            }
        }
    }
}

/// Writes the lines still waiting and stops the writer; for the end of the
/// process (later lines are dropped and counted).
pub fn flush() {
    if let Some(sink) = STDOUT.get() {
        sink.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            timestamp: Entry::timestamp(SystemTime::UNIX_EPOCH + Duration::from_micros(1_500_000)),
            direction: "outbound",
            service: Some("users"),
            route: Some("default"),
            method: "GET",
            authority: Some("users"),
            path: "/users/1",
            protocol: "HTTP/1.1",
            status: 200,
            duration_ms: Entry::millis(Duration::from_micros(1234)),
            bytes_in: 0,
            bytes_out: 17,
            upstream: Some("127.0.0.1:8080".parse().unwrap()),
            attempts: Some(1),
            peer: None,
            client: None,
            user: None,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            span_id: "00f067aa0ba902b7".to_owned(),
            sampled: true,
            request_id: "r-1",
            correlation_id: "c-1",
            user_agent: None,
            error: None,
        }
    }

    #[test]
    fn json_lines_have_every_field() {
        let mut line = Vec::new();
        entry().json(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["timestamp"], "1970-01-01T00:00:01.500000Z");
        assert_eq!(value["duration_ms"], 1.234);
        assert_eq!(value["upstream"], "127.0.0.1:8080");
        assert!(value["error"].is_null());
        assert_eq!(value.as_object().unwrap().len(), 24);
    }

    #[test]
    fn text_lines_read_left_to_right() {
        let mut line = Vec::new();
        entry().text(&mut line);
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.starts_with(
                "1970-01-01T00:00:01.500000Z outbound users GET users /users/1 HTTP/1.1 200 1.234ms in=0 out=17 upstream=127.0.0.1:8080"
            ),
            "{line}"
        );
        assert!(line.ends_with("correlation_id=c-1 error=-\n"), "{line}");
    }

    #[test]
    fn the_writer_batches_lines_and_writes_the_rest_when_closed() {
        let registry = prometheus::Registry::new();
        let metrics = crate::metrics::Metrics::register(&registry).unwrap();
        let sink = Arc::new(Sink::new(metrics.telemetry.clone()));
        for i in 0..3 {
            sink.send(format!("line {i}\n").as_bytes());
        }
        let writer = sink.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            writer.write_to(&mut out);
            out
        });
        sink.send(b"line 3\n");
        sink.pending().closed = true;
        sink.wake.notify_one();
        let out = thread.join().unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "line 0\nline 1\nline 2\nline 3\n");
        // Closed: further lines are dropped, not queued.
        sink.send(b"late\n");
        assert!(sink.pending().bytes.is_empty());
    }

    /// A disk that takes `room` bytes, then refuses until given more.
    struct Disk {
        written: Vec<u8>,
        room: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = buf.len().min(self.room);
            self.written.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_loses_whole_lines_counted_and_logging_resumes() {
        let mut disk = Disk {
            written: Vec::new(),
            room: 14,
        };
        let mut writer = Writer::default();
        // Two lines fit, the third is cut after 4 bytes, the fourth lost.
        assert_eq!(writer.write(&mut disk, b"line1\nline2\nline3\nline4\n"), 2);
        assert!(writer.failing && writer.mid_line);
        assert_eq!(writer.write(&mut disk, b"line5\n"), 1, "still full");
        disk.room = 100;
        assert_eq!(writer.write(&mut disk, b"line6\n"), 0);
        assert!(!writer.failing);
        assert_eq!(disk.written, b"line1\nline2\nli\nline6\n");
    }
}
