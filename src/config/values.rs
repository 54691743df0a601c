//! Value types the YAML config reads: human durations, byte sizes, and values
//! that remember where in the file they came from.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the human way: `250ms`, `2s`, `1m`, `1h30m`.
///
/// A bare number is refused: `timeout: 5` could mean seconds or milliseconds,
/// and a sidecar should not guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// The longest duration accepted: a hundred years. Longer is surely a
    /// mistake, and every deadline and certificate date computed from a
    /// duration stays far from overflowing.
    pub const MAX: Self = Self::from_secs(100 * 365 * 24 * 60 * 60);

    /// Parses `250ms`, `2s`, `1m`, `1h30m` (at most [`Self::MAX`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("empty duration; write it with a unit, like 250ms or 2s".to_owned());
        }
        if trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "duration {trimmed:?} has no unit; write it like {trimmed}ms or {trimmed}s"
            ));
        }
        let duration = humantime::parse_duration(trimmed)
            .map(Self)
            .map_err(|e| format!("bad duration {trimmed:?}: {e}; write it like 250ms, 2s or 1m"))?;
        if duration > Self::MAX {
            return Err(format!("duration {trimmed:?} is longer than 100 years"));
        }
        Ok(duration)
    }
}

impl Deref for HumanDuration {
    type Target = std::time::Duration;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A plain YAML scalar reads as text, so `5` arrives here as "5" and
        // gets the "no unit" message rather than a type error.
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A size in bytes, written as a number of bytes or with a unit:
/// `65536`, `64KiB`, `1MiB`, `16kB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }

    /// The size as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Parses `65536`, `64KiB`, `64K`, `1MiB`, `16kB`, `1MB`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("bad size {trimmed:?}; write it like 65536, 64KiB or 1MiB"))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "k" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {trimmed:?}; use B, KiB, MiB, GiB, kB, MB or GB"
                ));
            }
        };
        number
            .checked_mul(multiplier)
            .map(Self)
            .ok_or_else(|| format!("size {trimmed:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n % (1 << 20) == 0 {
            write!(f, "{}MiB", n >> 20)
        } else if n != 0 && n % (1 << 10) == 0 {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where a value stands in the config file (1-based; 0 when built in code).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column, 0 when unknown.
    pub column: u32,
}

/// A config value together with its position in the file, so that checks
/// made after parsing (a missing file, an undefined service) can point at it.
///
/// Equality and serialization look at the value only.
#[derive(Debug, Clone)]
pub struct Located<T> {
    value: T,
    position: Position,
}

impl<T> Located<T> {
    /// A value built in code, with no position in any file.
    pub fn new(value: T) -> Self {
        Self {
            value,
            position: Position::default(),
        }
    }

    /// A value at a known position.
    pub fn at(value: T, position: Position) -> Self {
        Self { value, position }
    }

    /// Where the value was written.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The value itself.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// Takes the value out.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T: Default> Default for Located<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T> From<T> for Located<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let position = Position {
            line: u32::try_from(spanned.referenced.line()).unwrap_or(u32::MAX),
            column: u32::try_from(spanned.referenced.column()).unwrap_or(u32::MAX),
        };
        Ok(Self {
            value: spanned.value,
            position,
        })
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_need_units() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("250ms", Some(Duration::from_millis(250))),
            ("2s", Some(Duration::from_secs(2))),
            ("1m", Some(Duration::from_secs(60))),
            ("1h30m", Some(Duration::from_secs(5400))),
            ("101y", None),
            ("99999999999999999s", None),
            ("5", None),
            ("", None),
            ("2q", None),
            ("fast", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                HumanDuration::parse(text).ok().map(|d| d.0),
                *want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn durations_round_trip_through_display() {
        for text in ["250ms", "2s", "1m", "30s"] {
            let d = HumanDuration::parse(text).unwrap();
            assert_eq!(HumanDuration::parse(&d.to_string()).unwrap(), d);
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("65536", Some(65536)),
            ("64KiB", Some(65536)),
            ("64K", Some(65536)),
            ("1MiB", Some(1 << 20)),
            ("16kB", Some(16_000)),
            ("12XB", None),
            ("KiB", None),
            ("99999999999999GiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(ByteSize::parse(text).ok().map(|s| s.0), *want, "{text:?}");
        }
        assert_eq!(ByteSize::kib(64).to_string(), "64KiB");
    }
}
