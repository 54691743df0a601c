//! `trace::propagation`: W3C `traceparent` / `tracestate` and B3 (single
//! and multi) read from a caller's headers, and ours written over them.
//!
//! Input: the first line lists the formats, in order (`w3c,b3,b3multi`;
//! unknown words are skipped); the rest is a header block.

use http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
use pilotfish::config::{Located, TracingConfig};
use pilotfish::trace::Tracer;
use pilotfish::trace::propagation::{Extracted, Format, HEADER_NAMES, extract, inject};

use super::input::{from_yaml, header_map, split_first_line};

/// Checks one input.
pub fn run(data: &[u8]) {
    let (first, block) = split_first_line(data);
    let formats: Vec<Format> = first
        .split(|&b| b == b',')
        .filter_map(|word| match super::input::trim_ows(word) {
            b"w3c" => Some(Format::W3c),
            b"b3" => Some(Format::B3),
            b"b3multi" => Some(Format::B3multi),
            _ => None,
        })
        .collect();
    let headers = header_map(block);
    let found = extract(&headers, &formats);
    check_extracted(&headers, &formats, &found);
    if let Some(parent) = &found.parent {
        for format in [Format::W3c, Format::B3, Format::B3multi] {
            check_round_trip(parent, format);
        }
    }
    check_injection_replaces(&headers, &formats);
    check_tracer(&formats, &found);
}

/// What `extract` found is a valid remote context, the first format's
/// that has one; failing that, the first decision sent alone.
fn check_extracted(headers: &HeaderMap, formats: &[Format], found: &Extracted) {
    if let Some(parent) = &found.parent {
        assert!(parent.is_remote() && parent.is_valid(), "{parent:?}");
        assert_eq!(
            parent.is_sampled(),
            found.sampled == Some(true),
            "the flags and the decision disagree"
        );
    }
    let each: Vec<Extracted> = formats.iter().map(|f| extract(headers, &[*f])).collect();
    match each.iter().find(|e| e.parent.is_some()) {
        Some(first) => assert_eq!(found, first, "not the first format's context"),
        None => {
            assert!(found.parent.is_none());
            let decision = each.iter().find_map(|e| e.sampled);
            assert_eq!(found.sampled, decision, "not the first decision");
        }
    }
}

/// A caller's context, written in any format and read back, is the same
/// context (B3 has no tracestate and no flags but sampled).
fn check_round_trip(parent: &SpanContext, format: Format) {
    let mut out = HeaderMap::new();
    inject(&mut out, parent, &[format]);
    let back = extract(&out, &[format]);
    let got = back
        .parent
        .as_ref()
        .unwrap_or_else(|| panic!("{format:?}: our own headers {out:?} do not read back"));
    assert_eq!(got.trace_id(), parent.trace_id(), "{format:?}");
    assert_eq!(got.span_id(), parent.span_id(), "{format:?}");
    assert_eq!(got.is_sampled(), parent.is_sampled(), "{format:?}");
    assert_eq!(back.sampled, Some(parent.is_sampled()), "{format:?}");
    if format == Format::W3c {
        assert_eq!(
            got.trace_state().header(),
            parent.trace_state().header(),
            "tracestate {out:?} does not read back"
        );
    }
}

/// Our context written over whatever the caller sent is what every listed
/// format then reads; formats not listed are left alone.
fn check_injection_replaces(headers: &HeaderMap, formats: &[Format]) {
    let ours = SpanContext::new(
        TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128),
        SpanId::from(0xb7ad_6b71_6920_3331_u64),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    );
    let mut out = headers.clone();
    inject(&mut out, &ours, formats);
    for format in formats {
        let back = extract(&out, &[*format]);
        let got = back
            .parent
            .unwrap_or_else(|| panic!("{format:?}: our context does not read back from {out:?}"));
        assert_eq!(
            got.trace_id(),
            ours.trace_id(),
            "{format:?}: a stale id won"
        );
        assert_eq!(got.span_id(), ours.span_id(), "{format:?}: a stale id won");
        assert_eq!(back.sampled, Some(true), "{format:?}: a stale decision won");
        assert_eq!(
            got.trace_state().header(),
            "",
            "{format:?}: a stale tracestate survived"
        );
    }
    let written = |f: Format, name: &str| match f {
        Format::W3c => name == "traceparent" || name == "tracestate",
        Format::B3 => name == "b3",
        Format::B3multi => name.starts_with("x-b3-"),
    };
    for name in headers.keys() {
        let ours = HEADER_NAMES.contains(&name.as_str())
            && formats.iter().any(|f| written(*f, name.as_str()));
        if !ours {
            assert!(
                headers.get_all(name).iter().eq(out.get_all(name).iter()),
                "{name} changed"
            );
        }
    }
}

/// This hop's span continues the caller's trace and follows its decision.
fn check_tracer(formats: &[Format], found: &Extracted) {
    for ratio in [0.0, 1.0] {
        let mut config: TracingConfig = from_yaml("{}");
        config.propagation = Located::new(formats.to_vec());
        config.sample_ratio = Located::new(ratio);
        config.otlp = None;
        let tracer = Tracer::new(&config, None);
        let span = tracer.start(found, SpanKind::Server, "fuzz");
        let context = span.context();
        assert!(context.is_valid() && !context.is_remote());
        if let Some(parent) = &found.parent {
            assert_eq!(context.trace_id(), parent.trace_id(), "a new trace");
            assert_eq!(
                context.trace_state().header(),
                parent.trace_state().header()
            );
        }
        let want = found.sampled.unwrap_or(ratio >= 1.0);
        assert_eq!(context.is_sampled(), want, "the caller's decision");
    }
}
