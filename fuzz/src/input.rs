//! Turning fuzz bytes into the values Pilotfish reads from outside.
//!
//! Inputs are text-like on purpose, so that seeds can be written by hand
//! and a minimised corpus can be read: most targets take lines, and a
//! header block is `name: value` lines, as on the wire.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The lines of `data` (split on `\n`, a trailing `\r` dropped).
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// The first line of `data` and the rest after it.
pub fn split_first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &data[..i];
            (line.strip_suffix(b"\r").unwrap_or(line), &data[i + 1..])
        }
        None => (data, &[]),
    }
}

/// `bytes` as text, if it is UTF-8.
pub fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A header block: one `name: value` field a line, in order, repeats kept.
/// Whitespace around the value is dropped, as an HTTP parser does; lines
/// that are not a valid field are skipped (the server would have refused
/// them before Pilotfish saw the request).
pub fn header_map(block: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines(block) {
        if let Some((name, value)) = field(line) {
            headers.append(name, value);
        }
    }
    headers
}

/// One `name: value` line as a header field, if it is a valid one.
pub fn field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = HeaderValue::from_bytes(trim_ows(&line[colon + 1..])).ok()?;
    Some((name, value))
}

/// Without spaces and tabs at either end (HTTP's optional whitespace).
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The comma-separated elements of a list header's value (RFC 9110 §5.6.1),
/// trimmed, empty ones dropped: on bytes, whatever their encoding.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// A config value from YAML, with the defaults of every field the YAML
/// leaves out: targets build config parts this way, so that fields added
/// to the schema later take their defaults instead of breaking the build.
pub fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml:?}: {e}"))
}

/// A little-endian number from up to 8 bytes (missing bytes are zero).
pub fn number(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks() {
        let map = header_map(b"A: 1\r\nb:2 \nbad line\nb:  3\n: empty name\n");
        assert_eq!(map.get_all("a").iter().count(), 1);
        let b: Vec<_> = map.get_all("b").iter().collect();
        assert_eq!(b, ["2", "3"]);
        assert_eq!(map.len(), 3);
    }
}
