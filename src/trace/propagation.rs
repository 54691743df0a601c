//! Trace-context propagation: the caller's trace read from a request's
//! headers, and ours written onto the requests we send.
//!
//! Services in one mesh speak W3C Trace Context or Zipkin's B3 (the single
//! `b3` header or the `x-b3-*` set). Reading any of them and writing the
//! formats the config names joins B3 and W3C callers into one trace.
//!
//! This runs on every proxied request, so it parses header bytes in place
//! and allocates only the values it writes. W3C is parsed strictly, as its
//! spec requires; `x-b3-*` also accepts uppercase hex and `true`/`false`,
//! which older Zipkin clients send. A malformed context counts as absent.

use std::borrow::Cow;
use std::str::FromStr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// A header format for the trace context: the config's
/// `tracing.propagation` entries, named here for what they are to this
/// module.
pub use crate::config::PropagationFormat as Format;

/// What a request's headers said about the caller's trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// The caller's span (trace id, span id, flags, tracestate), when the headers carried a valid one.
    /// Its `is_remote()` is true. Its sampled flag mirrors the caller's decision when it made one.
    pub parent: Option<SpanContext>,
    /// The caller's sampling decision, when it made one. A B3 caller may send ids with no
    /// decision (deferred: `None`), or only a decision with no ids (`b3: 0`, `x-b3-sampled: 1` alone).
    /// B3 debug (`d`, `x-b3-flags: 1`) counts as sampled.
    pub sampled: Option<bool>,
}

/// The header names every format may use (for docs and for stripping), lowercase.
pub const HEADER_NAMES: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Reads the first valid context among `formats`, in the order given.
///
/// The first format that yields ids wins. Failing that, the first sampling
/// decision sent without ids (B3 only) is returned alone.
pub fn extract(headers: &HeaderMap, formats: &[Format]) -> Extracted {
    let mut decision = None;
    for format in formats {
        let found = match format {
            Format::W3c => w3c(headers),
            Format::B3 => b3_single(headers),
            Format::B3multi => b3_multi(headers),
        };
        match found {
            Some(Found::Context(parent, sampled)) => {
                return Extracted {
                    parent: Some(parent),
                    sampled,
                };
            }
            Some(Found::Decision(sampled)) => decision = decision.or(Some(sampled)),
            None => {}
        }
    }
    Extracted {
        parent: None,
        sampled: decision,
    }
}

/// Writes `context` in each of `formats`, replacing that format's headers:
/// a stale value from the app must not survive beside ours. Headers of
/// formats not listed are left alone.
///
/// - W3C: `traceparent` (version 00, lowercase hex, the context's flags
///   byte), and `tracestate` when the context has one; a stale one is
///   removed otherwise.
/// - B3 single: `b3: {traceid}-{spanid16}-{1|0}`.
/// - B3 multi: every `x-b3-*` field removed (`x-b3-parentspanid` and
///   `x-b3-flags` too), then `x-b3-traceid`, `x-b3-spanid`,
///   `x-b3-sampled: 1|0`.
///
/// A B3 trace id is written with 16 digits when its high half is zero (a
/// 64-bit caller's id goes back as it came), else 32.
///
/// An invalid context (a zero id) only removes: a receiver would reject
/// zero ids, and the app's stale ones must not pass.
pub fn inject(headers: &mut HeaderMap, context: &SpanContext, formats: &[Format]) {
    for format in formats {
        match format {
            Format::W3c => inject_w3c(headers, context),
            Format::B3 => inject_b3_single(headers, context),
            Format::B3multi => inject_b3_multi(headers, context),
        }
    }
}

/// A random trace id for a new trace; never the invalid all-zero id.
pub fn new_trace_id() -> TraceId {
    TraceId::from(fastrand::u128(1..))
}

/// A random span id for a new span; never the invalid all-zero id.
pub fn new_span_id() -> SpanId {
    SpanId::from(fastrand::u64(1..))
}

/// What one format found, when it found anything valid.
enum Found {
    /// The caller's span, and its decision when it made one.
    Context(SpanContext, Option<bool>),
    /// A decision without ids (B3 only).
    Decision(bool),
}

/// `traceparent` (one field only) and `tracestate`.
fn w3c(headers: &HeaderMap) -> Option<Found> {
    let (trace_id, span_id, flags) = traceparent(single(headers, &TRACEPARENT)??)?;
    let sampled = flags & 0x01 != 0;
    // Only the sampled bit is defined for version 00; other bits are not ours to forward.
    let flags = TraceFlags::NOT_SAMPLED.with_sampled(sampled);
    let state = tracestate(headers).unwrap_or_default();
    let parent = SpanContext::new(trace_id, span_id, flags, true, state);
    Some(Found::Context(parent, Some(sampled)))
}

/// `version-traceid-parentid-flags`, laid out as version 00. A future
/// version may carry more after a `-` at position 55; 00 must end there.
fn traceparent(value: &[u8]) -> Option<(TraceId, SpanId, u8)> {
    const LEN: usize = 55;
    if value.len() < LEN || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    match hex(&value[..2], Case::Lower)? {
        0xff => return None,
        0x00 if value.len() != LEN => return None,
        _ if value.len() > LEN && value[LEN] != b'-' => return None,
        _ => {}
    }
    let trace_id = parse_trace_id(&value[3..35], Case::Lower)?;
    let span_id = parse_span_id(&value[36..52], Case::Lower)?;
    let flags = u8::try_from(hex(&value[53..55], Case::Lower)?).ok()?;
    Some((trace_id, span_id, flags))
}

/// Every `tracestate` field joined with `,`; `None` when absent or invalid,
/// which drops the tracestate but keeps the traceparent.
fn tracestate(headers: &HeaderMap) -> Option<TraceState> {
    let mut values = headers.get_all(&TRACESTATE).iter();
    let first = values.next()?.to_str().ok()?;
    let mut text = Cow::Borrowed(first);
    for value in values {
        let joined = text.to_mut();
        joined.push(',');
        joined.push_str(value.to_str().ok()?);
    }
    TraceState::from_str(&text).ok()
}

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]` or just
/// `{SamplingState}`, all lowercase as the spec says.
fn b3_single(headers: &HeaderMap) -> Option<Found> {
    let mut fields = single(headers, &B3)??.split(|&b| b == b'-');
    let first = fields.next()?;
    let Some(span) = fields.next() else {
        return b3_state(first).map(Found::Decision);
    };
    let trace_id = parse_trace_id(first, Case::Lower)?;
    let span_id = parse_span_id(span, Case::Lower)?;
    let sampled = match fields.next() {
        Some(state) => Some(b3_state(state)?),
        None => None,
    };
    if let Some(parent) = fields.next() {
        parse_span_id(parent, Case::Lower)?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(b3_context(trace_id, span_id, sampled))
}

/// A single-header sampling state; debug (`d`) implies sampled.
fn b3_state(field: &[u8]) -> Option<bool> {
    match field {
        b"1" | b"d" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// The `x-b3-*` fields. Ids must come as a pair; a decision may come alone.
/// A repeated or malformed id field makes the whole set invalid.
fn b3_multi(headers: &HeaderMap) -> Option<Found> {
    let trace = single(headers, &X_B3_TRACEID)?;
    let span = single(headers, &X_B3_SPANID)?;
    let parent = single(headers, &X_B3_PARENTSPANID)?;
    let sampled = b3_multi_decision(headers)?;
    match (trace, span, parent) {
        (None, None, None) => sampled.map(Found::Decision),
        (Some(trace), Some(span), parent) => {
            let trace_id = parse_trace_id(trace, Case::Any)?;
            let span_id = parse_span_id(span, Case::Any)?;
            if let Some(parent) = parent {
                parse_span_id(parent, Case::Any)?;
            }
            Some(b3_context(trace_id, span_id, sampled))
        }
        _ => None,
    }
}

/// `x-b3-flags: 1` (debug, which implies sampled) or `x-b3-sampled`; `None`
/// when either is repeated. An unknown value is no decision (deferred).
fn b3_multi_decision(headers: &HeaderMap) -> Option<Option<bool>> {
    if single(headers, &X_B3_FLAGS)? == Some(b"1") {
        return Some(Some(true));
    }
    Some(match single(headers, &X_B3_SAMPLED)? {
        Some(b"1") => Some(true),
        Some(b"0") => Some(false),
        Some(v) if v.eq_ignore_ascii_case(b"true") => Some(true),
        Some(v) if v.eq_ignore_ascii_case(b"false") => Some(false),
        _ => None,
    })
}

/// B3 has no flags byte or tracestate: sampled is the only flag it can carry.
fn b3_context(trace_id: TraceId, span_id: SpanId, sampled: Option<bool>) -> Found {
    let flags = TraceFlags::NOT_SAMPLED.with_sampled(sampled == Some(true));
    let parent = SpanContext::new(trace_id, span_id, flags, true, TraceState::NONE);
    Found::Context(parent, sampled)
}

/// The one value of `name`: `Some(None)` when absent, `None` when repeated
/// (several values of a context field are ambiguous, so invalid).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Option<&'a [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => None,
        None => Some(first.map(HeaderValue::as_bytes)),
    }
}

/// Which hex digits a format accepts.
#[derive(Clone, Copy)]
enum Case {
    Lower,
    Any,
}

/// 1 to 16 hex digits as a number; `None` on any other byte.
fn hex(digits: &[u8], case: Case) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let nibble = match (b, case) {
            (b'0'..=b'9', _) => b - b'0',
            (b'a'..=b'f', _) => b - b'a' + 10,
            (b'A'..=b'F', Case::Any) => b - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(nibble))
    })
}

/// A 32-digit trace id, or a 16-digit (64-bit B3) one left-padded with
/// zeros; never zero.
fn parse_trace_id(digits: &[u8], case: Case) -> Option<TraceId> {
    let id = match digits.len() {
        16 => u128::from(hex(digits, case)?),
        32 => u128::from(hex(&digits[..16], case)?) << 64 | u128::from(hex(&digits[16..], case)?),
        _ => return None,
    };
    (id != 0).then_some(TraceId::from(id))
}

/// A 16-digit span id; never zero.
fn parse_span_id(digits: &[u8], case: Case) -> Option<SpanId> {
    let id = hex(digits, case).filter(|_| digits.len() == 16)?;
    (id != 0).then_some(SpanId::from(id))
}

fn inject_w3c(headers: &mut HeaderMap, context: &SpanContext) {
    if !context.is_valid() {
        headers.remove(&TRACEPARENT);
        headers.remove(&TRACESTATE);
        return;
    }
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    put_hex(&mut value[3..35], &context.trace_id().to_bytes());
    put_hex(&mut value[36..52], &context.span_id().to_bytes());
    put_hex(&mut value[53..], &[context.trace_flags().to_u8()]);
    // `insert` replaces what the caller sent.
    put(headers, TRACEPARENT, &value);
    let state = context.trace_state();
    // Validated keys and values, but a value built in code may still hold
    // bytes a header cannot: then the tracestate is dropped.
    let state = (state.into_iter().len() > 0)
        .then(|| HeaderValue::from_bytes(state.header().as_bytes()).ok())
        .flatten();
    match state {
        Some(state) => headers.insert(TRACESTATE, state),
        None => headers.remove(&TRACESTATE),
    };
}

fn inject_b3_single(headers: &mut HeaderMap, context: &SpanContext) {
    headers.remove(&B3);
    if !context.is_valid() {
        return;
    }
    let mut value = *b"00000000000000000000000000000000-0000000000000000-0";
    let trace = b3_trace_id(context);
    let start = 32 - trace.len();
    value[start..32].copy_from_slice(trace.digits());
    put_hex(&mut value[33..49], &context.span_id().to_bytes());
    value[50] = if context.is_sampled() { b'1' } else { b'0' };
    put(headers, B3, &value[start..]);
}

/// A trace id in B3 hex: 16 digits when its high half is zero (a 64-bit
/// id, as the caller sent it: older Zipkin tracers read no other), else 32.
struct B3TraceId([u8; 32], bool);

impl B3TraceId {
    fn digits(&self) -> &[u8] {
        if self.1 { &self.0[16..] } else { &self.0 }
    }

    fn len(&self) -> usize {
        self.digits().len()
    }
}

fn b3_trace_id(context: &SpanContext) -> B3TraceId {
    let bytes = context.trace_id().to_bytes();
    let mut digits = [0; 32];
    put_hex(&mut digits, &bytes);
    B3TraceId(digits, bytes[..8] == [0; 8])
}

fn inject_b3_multi(headers: &mut HeaderMap, context: &SpanContext) {
    for name in [
        X_B3_TRACEID,
        X_B3_SPANID,
        X_B3_PARENTSPANID,
        X_B3_SAMPLED,
        X_B3_FLAGS,
    ] {
        headers.remove(name);
    }
    if !context.is_valid() {
        return;
    }
    put(headers, X_B3_TRACEID, b3_trace_id(context).digits());
    let mut span = [0; 16];
    put_hex(&mut span, &context.span_id().to_bytes());
    put(headers, X_B3_SPANID, &span);
    let sampled = if context.is_sampled() { "1" } else { "0" };
    headers.insert(X_B3_SAMPLED, HeaderValue::from_static(sampled));
}

/// Sets `name` to `value`. Hex digits and `-` always make a valid value, so
/// for our ids the skip never happens; it avoids a panic path all the same.
///
/// Marked sensitive (HPACK: never indexed): the span id is new at every
/// hop, and in the HTTP/2 link's header table it would only push out the
/// fields that do repeat.
fn put(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    if let Ok(mut value) = HeaderValue::from_bytes(value) {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
}

/// Writes `bytes` as lowercase hex into `out`, two digits a byte.
fn put_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";
    const TRACE64: &str = "a3ce929d0e0e4736";
    const PADDED64: &str = "0000000000000000a3ce929d0e0e4736";
    const PARENT: &str = "05e3ac9a4f6e3b90";
    const ALL: [Format; 3] = [Format::W3c, Format::B3, Format::B3multi];

    /// An extraction in a comparable form: (trace id, span id) as hex, and the decision.
    type Seen = (Option<(String, String)>, Option<bool>);

    fn want(ids: Option<(&str, &str)>, sampled: Option<bool>) -> Seen {
        (ids.map(|(t, s)| (t.to_owned(), s.to_owned())), sampled)
    }

    fn seen(headers: &HeaderMap, formats: &[Format]) -> Seen {
        let found = extract(headers, formats);
        let ids = found.parent.map(|parent| {
            assert!(parent.is_remote() && parent.is_valid());
            assert_eq!(parent.is_sampled(), found.sampled == Some(true));
            (parent.trace_id().to_string(), parent.span_id().to_string())
        });
        (ids, found.sampled)
    }

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// `x-b3-*` fields from `"traceid=... spanid=..."`.
    fn b3_fields(spec: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        for field in spec.split_whitespace() {
            let (name, value) = field.split_once('=').unwrap();
            let name = HeaderName::from_bytes(format!("x-b3-{name}").as_bytes()).unwrap();
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        let all = headers.get_all(name).iter();
        all.map(|v| v.to_str().unwrap().to_owned()).collect()
    }

    fn context(sampled: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex(TRACE).unwrap(),
            SpanId::from_hex(SPAN).unwrap(),
            TraceFlags::NOT_SAMPLED.with_sampled(sampled),
            false,
            TraceState::from_str(state).unwrap(),
        )
    }

    #[test]
    fn format_names() {
        for (format, name) in [
            (Format::W3c, "w3c"),
            (Format::B3, "b3"),
            (Format::B3multi, "b3multi"),
        ] {
            assert_eq!(format.as_str(), name);
            let quoted = format!("\"{name}\"");
            assert_eq!(serde_json::from_str::<Format>(&quoted).unwrap(), format);
            assert_eq!(serde_json::to_string(&format).unwrap(), quoted);
        }
        for bad in ["\"W3C\"", "\"b3-multi\"", "\"zipkin\""] {
            assert!(serde_json::from_str::<Format>(bad).is_err(), "{bad}");
        }
        assert!(
            HEADER_NAMES
                .iter()
                .all(|n| HeaderName::from_static(n) == *n)
        );
    }

    #[test]
    fn traceparent_values() {
        let (t, s) = (TRACE, SPAN);
        let valid = [
            (format!("00-{t}-{s}-01"), true),
            (format!("00-{t}-{s}-00"), false),
            // Unknown flags: only the sampled bit counts.
            (format!("00-{t}-{s}-09"), true),
            (format!("00-{t}-{s}-fe"), false),
            // Future versions: the 00 layout, maybe more after a '-'.
            (format!("01-{t}-{s}-01"), true),
            (format!("cc-{t}-{s}-01-what-the-future-holds"), true),
            (format!("cc-{t}-{s}-00-"), false),
        ];
        for (value, sampled) in valid {
            let got = seen(&headers(&[("traceparent", &value)]), &[Format::W3c]);
            assert_eq!(got, want(Some((t, s)), Some(sampled)), "{value}");
        }
        let (upper_t, upper_s, zeros) = (t.to_uppercase(), s.to_uppercase(), "0".repeat(32));
        let invalid = [
            format!("cc-{t}-{s}-01x"),
            format!("00-{t}-{s}-01-"),
            format!("00-{t}-{s}-01-extra"),
            format!("ff-{t}-{s}-01"),
            format!("0-{t}-{s}-01"),
            format!("0g-{t}-{s}-01"),
            format!("0A-{t}-{s}-01"),
            format!("00-{upper_t}-{s}-01"),
            format!("00-{t}-{upper_s}-01"),
            format!("00-{t}-{s}-0A"),
            format!("00-{t}-{s}-1"),
            format!("00-{t}-{s}-001"),
            format!("00-{t}-{s}-0x"),
            format!("00-{t}-{s}-+1"),
            format!("00-{zeros}-{s}-01"),
            format!("00-{t}-{}-01", &zeros[..16]),
            format!("00-{}-{s}-01", &t[1..]),
            format!("00-{}g-{s}-01", &t[1..]),
            format!("00-{t}0-{s}-01"),
            format!("00_{t}-{s}-01"),
            format!("00-{t}_{s}-01"),
            format!("00-{t}-{s}_01"),
            format!(" 00-{t}-{s}-01"),
            "00".to_owned(),
            String::new(),
        ];
        for value in invalid {
            let map = headers(&[("traceparent", &value)]);
            assert_eq!(
                extract(&map, &[Format::W3c]),
                Extracted::default(),
                "{value}"
            );
        }
    }

    #[test]
    fn w3c_flags_keep_only_sampled() {
        let value = format!("00-{TRACE}-{SPAN}-03");
        let found = extract(&headers(&[("traceparent", &value)]), &[Format::W3c]);
        assert_eq!(found.parent.unwrap().trace_flags(), TraceFlags::SAMPLED);
    }

    #[test]
    fn repeated_fields_are_invalid() {
        let tp = format!("00-{TRACE}-{SPAN}-01");
        let b3 = format!("{TRACE}-{SPAN}-1");
        let maps = [
            headers(&[("traceparent", &tp), ("traceparent", &tp)]),
            headers(&[("b3", "1"), ("b3", &b3)]),
            b3_fields(&format!("traceid={TRACE} traceid={TRACE} spanid={SPAN}")),
            b3_fields(&format!("traceid={TRACE} spanid={SPAN} spanid={SPAN}")),
            b3_fields(&format!(
                "traceid={TRACE} spanid={SPAN} sampled=1 sampled=1"
            )),
            b3_fields(&format!("traceid={TRACE} spanid={SPAN} flags=1 flags=1")),
            b3_fields("sampled=1 sampled=0"),
        ];
        for map in maps {
            assert_eq!(extract(&map, &ALL), Extracted::default(), "{map:?}");
        }
    }

    #[test]
    fn tracestate_values() {
        // (tracestate fields, the tracestate kept)
        let cases: &[(&[&str], &str)] = &[
            (&[], ""),
            (&[""], ""),
            (&["rojo=00f067aa0ba902b7"], "rojo=00f067aa0ba902b7"),
            (&["rojo=1,congo=t61rcWkgMzE"], "rojo=1,congo=t61rcWkgMzE"),
            (
                &["rojo=1", "congo=2", "x@vendor=3"],
                "rojo=1,congo=2,x@vendor=3",
            ),
            (&["rojo=1 , congo=2"], "rojo=1,congo=2"),
            (&["rojo=1,,congo=2"], "rojo=1,congo=2"),
            // Invalid: dropped, the traceparent kept.
            (&["Rojo=1"], ""),
            (&["rojo"], ""),
            (&["rojo=1", "BAD=2"], ""),
            (&["rojo=1,a b=2"], ""),
        ];
        let tp = format!("00-{TRACE}-{SPAN}-01");
        for (fields, kept) in cases {
            let mut map = headers(&[("traceparent", &tp)]);
            for field in *fields {
                map.append("tracestate", HeaderValue::from_str(field).unwrap());
            }
            let parent = extract(&map, &[Format::W3c])
                .parent
                .expect("traceparent kept");
            assert_eq!(parent.trace_state().header(), *kept, "{fields:?}");
        }
    }

    #[test]
    fn tracestate_needs_a_traceparent() {
        let map = headers(&[("tracestate", "rojo=1"), ("b3", &format!("{TRACE}-{SPAN}"))]);
        let parent = extract(&map, &ALL).parent.unwrap();
        assert_eq!(parent.trace_state(), &TraceState::NONE);
    }

    #[test]
    fn non_ascii_values_are_invalid() {
        let bytes: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\xff";
        for name in HEADER_NAMES {
            let mut map = HeaderMap::new();
            map.insert(name, HeaderValue::from_bytes(bytes).unwrap());
            assert_eq!(extract(&map, &ALL), Extracted::default(), "{name}");
            map.insert(name, HeaderValue::from_bytes(b"\x80\xfe-1").unwrap());
            assert_eq!(extract(&map, &ALL), Extracted::default(), "{name}");
        }
        let mut map = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
        map.insert(
            "tracestate",
            HeaderValue::from_bytes(b"rojo=\xe9t\xe9").unwrap(),
        );
        let parent = extract(&map, &[Format::W3c]).parent.unwrap();
        assert_eq!(parent.trace_state(), &TraceState::NONE);
    }

    #[test]
    fn b3_single_values() {
        let (t, s, p) = (TRACE, SPAN, PARENT);
        let valid = [
            (format!("{t}-{s}"), Some((t, s)), None),
            (format!("{t}-{s}-1"), Some((t, s)), Some(true)),
            (format!("{t}-{s}-0"), Some((t, s)), Some(false)),
            (format!("{t}-{s}-d"), Some((t, s)), Some(true)),
            (format!("{t}-{s}-1-{p}"), Some((t, s)), Some(true)),
            (
                format!("{TRACE64}-{s}-0-{p}"),
                Some((PADDED64, s)),
                Some(false),
            ),
            (format!("{TRACE64}-{s}"), Some((PADDED64, s)), None),
            ("1".to_owned(), None, Some(true)),
            ("0".to_owned(), None, Some(false)),
            ("d".to_owned(), None, Some(true)),
        ];
        for (value, ids, sampled) in valid {
            let got = seen(&headers(&[("b3", &value)]), &[Format::B3]);
            assert_eq!(got, want(ids, sampled), "{value}");
        }
        let (upper_t, upper_s, zeros) = (t.to_uppercase(), s.to_uppercase(), "0".repeat(32));
        let invalid = [
            "2".to_owned(),
            "true".to_owned(),
            String::new(),
            t.to_owned(),
            format!("{t}-{s}-"),
            format!("{t}-{s}-2"),
            format!("{t}-{s}-true"),
            format!("{t}-{s}-1-"),
            format!("{t}-{s}-1-{p}-1"),
            format!("{t}-{s}-1-{}", &p[1..]),
            format!("{t}-{s}-1-{}", &zeros[..16]),
            format!("{t}-{s}-{p}"),
            format!("{upper_t}-{s}"),
            format!("{t}-{upper_s}"),
            format!("{}-{s}", &t[8..]),
            format!("{zeros}-{s}"),
            format!("{}-{s}", &zeros[..16]),
            format!("{t}-{}", &zeros[..16]),
            format!("{t}-{}", &s[1..]),
            format!("-{s}-1"),
            format!("{t} -{s}"),
        ];
        for value in invalid {
            let map = headers(&[("b3", &value)]);
            assert_eq!(
                extract(&map, &[Format::B3]),
                Extracted::default(),
                "{value}"
            );
        }
    }

    #[test]
    fn b3_multi_values() {
        let (t, s, p, upper) = (TRACE, SPAN, PARENT, TRACE.to_uppercase());
        let valid = [
            (format!("traceid={t} spanid={s}"), Some((t, s)), None),
            (
                format!("traceid={t} spanid={s} sampled=1"),
                Some((t, s)),
                Some(true),
            ),
            (
                format!("traceid={t} spanid={s} parentspanid={p}"),
                Some((t, s)),
                None,
            ),
            (
                format!("traceid={TRACE64} spanid={s} sampled=0"),
                Some((PADDED64, s)),
                Some(false),
            ),
            // Old clients: uppercase hex, true/false.
            (
                format!("traceid={upper} spanid={s} sampled=true"),
                Some((t, s)),
                Some(true),
            ),
            (
                format!("traceid={t} spanid={s} sampled=False"),
                Some((t, s)),
                Some(false),
            ),
            // Debug implies sampled, whatever x-b3-sampled says.
            (
                format!("traceid={t} spanid={s} flags=1"),
                Some((t, s)),
                Some(true),
            ),
            (
                format!("traceid={t} spanid={s} sampled=0 flags=1"),
                Some((t, s)),
                Some(true),
            ),
            // An unknown value is no decision.
            (
                format!("traceid={t} spanid={s} sampled=yes"),
                Some((t, s)),
                None,
            ),
            (
                format!("traceid={t} spanid={s} flags=0"),
                Some((t, s)),
                None,
            ),
            // A decision alone.
            ("sampled=1".to_owned(), None, Some(true)),
            ("sampled=0".to_owned(), None, Some(false)),
            ("flags=1".to_owned(), None, Some(true)),
            ("sampled=maybe".to_owned(), None, None),
            (String::new(), None, None),
        ];
        for (spec, ids, sampled) in valid {
            let got = seen(&b3_fields(&spec), &[Format::B3multi]);
            assert_eq!(got, want(ids, sampled), "{spec}");
        }
        // Half a pair or a bad id: nothing, not even the decision.
        let invalid = [
            format!("traceid={t} sampled=1"),
            format!("spanid={s} sampled=1"),
            format!("parentspanid={p} sampled=1"),
            format!("traceid={} spanid={s}", &t[2..]),
            format!("traceid={t} spanid={}", &s[2..]),
            format!("traceid=0000000000000000 spanid={s} sampled=1"),
            format!("traceid={t} spanid=0000000000000000"),
            format!("traceid=4bf92f3577b34dag spanid={s}"),
            format!("traceid={t} spanid={s} parentspanid=x sampled=1"),
        ];
        for spec in invalid {
            let map = b3_fields(&spec);
            assert_eq!(
                extract(&map, &[Format::B3multi]),
                Extracted::default(),
                "{spec}"
            );
        }
    }

    #[test]
    fn extraction_order() {
        use Format::*;
        let tp = format!("00-{TRACE}-{SPAN}-01");
        let b3 = format!("{TRACE64}-{PARENT}-0");
        let both = headers(&[("traceparent", &tp), ("b3", &b3)]);
        let b3_only = headers(&[("b3", &b3)]);
        let decision_then_ids = headers(&[("b3", "0"), ("traceparent", &tp)]);
        let decisions = headers(&[("b3", "0"), ("x-b3-sampled", "1")]);
        let broken_w3c = headers(&[("traceparent", "00-junk"), ("b3", &b3)]);
        let (w3c, b3) = (Some((TRACE, SPAN)), Some((PADDED64, PARENT)));
        let cases: &[(&HeaderMap, &[Format], Seen)] = &[
            (&both, &[W3c, B3], want(w3c, Some(true))),
            (&both, &[B3, W3c], want(b3, Some(false))),
            (&both, &[B3multi, W3c], want(w3c, Some(true))),
            (&both, &[], want(None, None)),
            // A format not listed is not read.
            (&b3_only, &[W3c, B3multi], want(None, None)),
            (&b3_only, &[W3c, B3multi, B3], want(b3, Some(false))),
            // Ids in a later format beat a decision alone in an earlier one.
            (&decision_then_ids, &[B3, W3c], want(w3c, Some(true))),
            (&decision_then_ids, &[B3], want(None, Some(false))),
            // Of decisions alone, the first listed.
            (&decisions, &[B3, B3multi], want(None, Some(false))),
            (&decisions, &[B3multi, B3], want(None, Some(true))),
            // An invalid context falls through to the next format.
            (&broken_w3c, &[W3c, B3], want(b3, Some(false))),
        ];
        for (map, formats, wanted) in cases {
            assert_eq!(&seen(map, formats), wanted, "{formats:?} {map:?}");
        }
    }

    #[test]
    fn injected_values() {
        let (t, s) = (TRACE, SPAN);
        let with_state = context(false, "rojo=1,congo=2");
        let cases: &[(SpanContext, Format, &[&str])] = &[
            (
                context(true, ""),
                Format::W3c,
                &[&format!("traceparent: 00-{t}-{s}-01")],
            ),
            (
                with_state,
                Format::W3c,
                &[
                    &format!("traceparent: 00-{t}-{s}-00"),
                    "tracestate: rojo=1,congo=2",
                ],
            ),
            (context(true, ""), Format::B3, &[&format!("b3: {t}-{s}-1")]),
            (context(false, ""), Format::B3, &[&format!("b3: {t}-{s}-0")]),
            (
                context(true, ""),
                Format::B3multi,
                &[
                    &format!("x-b3-traceid: {t}"),
                    &format!("x-b3-spanid: {s}"),
                    "x-b3-sampled: 1",
                ],
            ),
            (
                context(false, ""),
                Format::B3multi,
                &[
                    &format!("x-b3-traceid: {t}"),
                    &format!("x-b3-spanid: {s}"),
                    "x-b3-sampled: 0",
                ],
            ),
        ];
        for (context, format, wanted) in cases {
            let mut map = HeaderMap::new();
            inject(&mut map, context, &[*format]);
            let got: Vec<String> = map
                .iter()
                .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
                .collect();
            assert_eq!(got, *wanted, "{format:?}");
        }
    }

    #[test]
    fn injection_replaces_stale_values() {
        let mut map = headers(&[
            (
                "traceparent",
                "00-11111111111111111111111111111111-1111111111111111-01",
            ),
            ("traceparent", "garbage"),
            ("tracestate", "stale=1"),
            ("tracestate", "stale=2"),
            ("b3", "1"),
            ("b3", "22222222222222222222222222222222-2222222222222222-1"),
            ("x-b3-traceid", "3333333333333333"),
            ("x-b3-spanid", "3333333333333333"),
            ("x-b3-parentspanid", "3333333333333333"),
            ("x-b3-sampled", "1"),
            ("x-b3-sampled", "true"),
            ("x-b3-flags", "1"),
            ("x-request-id", "keep"),
        ]);
        inject(&mut map, &context(false, ""), &ALL);
        for name in HEADER_NAMES {
            let count = match name {
                "tracestate" | "x-b3-parentspanid" | "x-b3-flags" => 0,
                _ => 1,
            };
            assert_eq!(values(&map, name).len(), count, "{name}");
        }
        assert_eq!(values(&map, "x-request-id"), ["keep"]);
        for format in ALL {
            assert_eq!(
                seen(&map, &[format]),
                want(Some((TRACE, SPAN)), Some(false))
            );
        }
    }

    #[test]
    fn injection_leaves_unlisted_formats() {
        let stale = [
            (
                "traceparent",
                "00-11111111111111111111111111111111-1111111111111111-01",
            ),
            ("tracestate", "stale=1"),
            ("b3", "1"),
            ("x-b3-traceid", "3333333333333333"),
            ("x-b3-flags", "1"),
        ];
        // (formats written, the stale fields that survive)
        let cases: &[(&[Format], &[&str])] = &[
            (&[Format::W3c], &["b3", "x-b3-traceid", "x-b3-flags"]),
            (
                &[Format::B3],
                &["traceparent", "tracestate", "x-b3-traceid", "x-b3-flags"],
            ),
            (&[Format::B3multi], &["traceparent", "tracestate", "b3"]),
            (
                &[],
                &[
                    "traceparent",
                    "tracestate",
                    "b3",
                    "x-b3-traceid",
                    "x-b3-flags",
                ],
            ),
        ];
        for (formats, kept) in cases {
            let mut map = headers(&stale);
            inject(&mut map, &context(true, ""), formats);
            for (name, value) in stale {
                let survived = values(&map, name).contains(&value.to_owned());
                assert_eq!(survived, kept.contains(&name), "{formats:?} {name}");
            }
        }
    }

    #[test]
    fn invalid_context_only_removes() {
        let mut map = headers(&[("traceparent", "stale"), ("b3", "1"), ("x-b3-sampled", "1")]);
        inject(&mut map, &SpanContext::NONE, &ALL);
        assert!(map.is_empty(), "{map:?}");
    }

    #[test]
    fn b3_multi_caller_bridged_to_w3c() {
        let map = b3_fields(&format!("traceid={TRACE64} spanid={PARENT} sampled=1"));
        let found = extract(&map, &[Format::W3c, Format::B3multi]);
        assert_eq!(found.sampled, Some(true));
        // Our span: the caller's trace and decision, a span id of our own.
        let caller = found.parent.unwrap();
        let ours = SpanContext::new(
            caller.trace_id(),
            SpanId::from_hex(SPAN).unwrap(),
            caller.trace_flags(),
            false,
            TraceState::NONE,
        );
        let mut out = HeaderMap::new();
        inject(&mut out, &ours, &[Format::W3c]);
        assert_eq!(
            values(&out, "traceparent"),
            [format!("00-{PADDED64}-{SPAN}-01")]
        );
        assert_eq!(
            seen(&out, &[Format::W3c]),
            want(Some((PADDED64, SPAN)), Some(true))
        );
    }

    #[test]
    fn w3c_context_round_trips_through_b3() {
        for sampled in [true, false] {
            let tp = format!("00-{TRACE}-{SPAN}-0{}", u8::from(sampled));
            let caller = extract(&headers(&[("traceparent", &tp)]), &[Format::W3c]);
            let caller = caller.parent.unwrap();
            for format in [Format::B3, Format::B3multi] {
                let mut out = HeaderMap::new();
                inject(&mut out, &caller, &[format]);
                let back = extract(&out, &[format]);
                assert_eq!(back.parent.as_ref(), Some(&caller), "{format:?}");
                assert_eq!(back.sampled, Some(sampled), "{format:?}");
            }
        }
    }

    #[test]
    fn random_ids_round_trip() {
        let mut trace_ids = std::collections::HashSet::new();
        for i in 0..1000 {
            let (trace_id, span_id) = (new_trace_id(), new_span_id());
            assert!(trace_id != TraceId::INVALID && span_id != SpanId::INVALID);
            assert!(trace_ids.insert(trace_id), "repeated trace id");
            let flags = TraceFlags::NOT_SAMPLED.with_sampled(i % 2 == 0);
            let ours = SpanContext::new(trace_id, span_id, flags, false, TraceState::NONE);
            let mut out = HeaderMap::new();
            inject(&mut out, &ours, &ALL);
            let remote = SpanContext::new(trace_id, span_id, flags, true, TraceState::NONE);
            for format in ALL {
                let back = extract(&out, &[format]);
                assert_eq!(back.parent.as_ref(), Some(&remote), "{format:?}");
                assert_eq!(back.sampled, Some(i % 2 == 0), "{format:?}");
            }
        }
    }

    #[test]
    fn a_64_bit_b3_trace_id_goes_back_as_64_bits() {
        let map = b3_fields(&format!("traceid={TRACE64} spanid={PARENT} sampled=1"));
        let parent = extract(&map, &[Format::B3multi]).parent.expect("context");
        let mut out = HeaderMap::new();
        inject(&mut out, &parent, &ALL);
        assert_eq!(out["x-b3-traceid"], TRACE64);
        assert!(
            out["b3"]
                .to_str()
                .unwrap()
                .starts_with(&format!("{TRACE64}-{PARENT}-"))
        );
        // W3C has no short form.
        assert!(out["traceparent"].to_str().unwrap().contains(PADDED64));
        // A 128-bit id keeps its 32 digits.
        let full = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
        let parent = extract(&full, &[Format::W3c]).parent.expect("context");
        inject(&mut out, &parent, &ALL);
        assert_eq!(out["x-b3-traceid"], TRACE);
    }
}
