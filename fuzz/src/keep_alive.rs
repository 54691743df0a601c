//! `http::h1_pool::keep_alive_for`: how long a pooled HTTP/1.1 connection
//! may stay idle after an upstream's response (`Connection`, `Keep-Alive`).
//!
//! Input: the pool's idle timeout in seconds on the first line (60 if
//! none), then the response's header block.

use std::time::Duration;

use pilotfish::config::HumanDuration;
use pilotfish::http::h1_pool::keep_alive_for;

use super::input::{header_map, list_elements, split_first_line, text};

/// Checks one input.
pub fn run(data: &[u8]) {
    let (first, block) = split_first_line(data);
    let idle = text(first)
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
        // A config allows no longer.
        .min(HumanDuration::MAX.0);
    let headers = header_map(block);
    let keep = keep_alive_for(&headers, idle);

    // `Connection: close` in any line, among any other options, means the
    // server closes the connection after this response.
    let closes = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| list_elements(v.as_bytes()).any(|o| o.eq_ignore_ascii_case(b"close")));
    if closes {
        assert_eq!(
            keep,
            None,
            "kept a connection the server closes: {:?}",
            headers
                .get_all(http::header::CONNECTION)
                .iter()
                .collect::<Vec<_>>()
        );
    }
    if let Some(keep) = keep {
        assert!(keep <= idle, "{keep:?} is longer than the idle timeout");
        // The pool adds it to the clock (`Instant::now() + keep`).
        assert!(tokio::time::Instant::now().checked_add(keep).is_some());
    }
    if !closes && !headers.contains_key("keep-alive") {
        assert_eq!(keep, Some(idle));
    }
}
