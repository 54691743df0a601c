//! Picks one of a route's weighted backends: at random in proportion to
//! the weights, or sticky, by a request field's value (hashed onto the
//! weights, so a value keeps its backend while the weights stay) or by a
//! cookie naming the backend (set on the answer when missing).

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::StickyConfig;

/// The backends of a route and how one is picked.
#[derive(Debug, Clone)]
pub struct Split {
    names: Vec<String>,
    /// Running sums of the weights: backend `i` takes `[cumulative[i-1],
    /// cumulative[i])`.
    cumulative: Vec<u64>,
    sticky: Option<Sticky>,
}

#[derive(Debug, Clone)]
enum Sticky {
    Header(HeaderName),
    Cookie(String),
}

/// The backend picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// Its index in the backends.
    pub index: usize,
    /// `Set-Cookie` for a cookie-sticky split whose request had no valid
    /// cookie.
    pub set_cookie: Option<HeaderValue>,
}

impl Split {
    /// `backends`: (service, weight) in config order. All weights 0 (which
    /// validation refuses) always picks the first.
    pub fn new(backends: &[(&str, u32)], sticky: Option<&StickyConfig>) -> Self {
        let mut total = 0u64;
        let cumulative = backends
            .iter()
            .map(|(_, weight)| {
                total += u64::from(*weight);
                total
            })
            .collect();
        let sticky = match sticky {
            Some(StickyConfig::Header(name)) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(Sticky::Header),
            Some(StickyConfig::Cookie(name)) => Some(Sticky::Cookie(name.clone())),
            None => None,
        };
        Self {
            names: backends
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect(),
            cumulative,
            sticky,
        }
    }

    /// The backend for a request with these fields.
    pub fn pick(&self, headers: &HeaderMap) -> Pick {
        let random = |split: &Self| split.at(fastrand::u64(0..split.total().max(1)));
        match &self.sticky {
            Some(Sticky::Header(name)) => {
                let index = match headers.get(name) {
                    // Scaled rather than `% total`: no bias to low numbers.
                    Some(value) => self.at(((u128::from(fnv1a(value.as_bytes()))
                        * u128::from(self.total()))
                        >> 64) as u64),
                    None => random(self),
                };
                Pick {
                    index,
                    set_cookie: None,
                }
            }
            Some(Sticky::Cookie(cookie)) => {
                let valid = cookies(headers, cookie).find_map(|value| {
                    self.names
                        .iter()
                        .position(|name| name == value)
                        .filter(|&i| self.weight(i) > 0)
                });
                match valid {
                    Some(index) => Pick {
                        index,
                        set_cookie: None,
                    },
                    None => {
                        let index = random(self);
                        let set_cookie = self.names.get(index).and_then(|name| {
                            HeaderValue::from_str(&format!(
                                "{cookie}={name}; Path=/; HttpOnly; SameSite=Lax"
                            ))
                            .ok()
                        });
                        Pick { index, set_cookie }
                    }
                }
            }
            None => Pick {
                index: random(self),
                set_cookie: None,
            },
        }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    fn weight(&self, i: usize) -> u64 {
        let before = if i == 0 { 0 } else { self.cumulative[i - 1] };
        self.cumulative[i] - before
    }

    /// The backend whose range holds `point` (0 when all weigh nothing).
    fn at(&self, point: u64) -> usize {
        if self.total() == 0 {
            return 0;
        }
        self.cumulative.partition_point(|&c| c <= point)
    }
}

/// The values of cookie `name` in every `Cookie` field (`a=1; b=2`),
/// surrounding quotes removed.
fn cookies<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|field| field.to_str().ok())
        .flat_map(|field| field.split(';'))
        .filter_map(move |pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
}

/// FNV-1a, 64 bits: stable across runs and builds (unlike `RandomState`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn picks_in_proportion_to_the_weights() {
        let split = Split::new(&[("a", 70), ("b", 0), ("c", 20), ("d", 10)], None);
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            counts[split.pick(&HeaderMap::new()).index] += 1;
        }
        assert_eq!(counts[1], 0, "weight 0 gets nothing");
        for (i, want) in [(0, 7000), (2, 2000), (3, 1000)] {
            assert!(counts[i].abs_diff(want) < 300, "{counts:?}");
        }
        let zero = Split::new(&[("a", 0), ("b", 0)], None);
        assert_eq!(zero.pick(&HeaderMap::new()).index, 0);
        assert_eq!(Split::new(&[], None).pick(&HeaderMap::new()).index, 0);
    }

    #[test]
    fn a_header_value_keeps_its_backend() {
        let sticky = StickyConfig::Header("x-user".into());
        let split = Split::new(&[("a", 50), ("b", 50)], Some(&sticky));
        let mut seen = [0u32; 2];
        for user in 0..1000 {
            let h = headers(&[("x-user", &format!("user-{user}"))]);
            let first = split.pick(&h);
            assert_eq!(first.set_cookie, None);
            for _ in 0..3 {
                assert_eq!(split.pick(&h).index, first.index);
            }
            seen[first.index] += 1;
        }
        // the values spread over both
        assert!(seen[0] > 400 && seen[1] > 400, "{seen:?}");
        // the same split built again agrees (a stable hash)
        let again = Split::new(&[("a", 50), ("b", 50)], Some(&sticky));
        let h = headers(&[("x-user", "alice")]);
        assert_eq!(again.pick(&h).index, split.pick(&h).index);
    }

    #[test]
    fn a_cookie_names_the_backend() {
        let sticky = StickyConfig::Cookie("pf-backend".into());
        let split = Split::new(&[("stable", 90), ("canary", 10), ("old", 0)], Some(&sticky));
        let kept = split.pick(&headers(&[("cookie", "a=1; pf-backend=canary; b=2")]));
        assert_eq!(
            kept,
            Pick {
                index: 1,
                set_cookie: None
            }
        );
        // several Cookie fields, quoted value
        let kept = split.pick(&headers(&[
            ("cookie", "a=1"),
            ("cookie", "pf-backend=\"stable\""),
        ]));
        assert_eq!(
            kept,
            Pick {
                index: 0,
                set_cookie: None
            }
        );
        // unknown, weight 0, or none: picked anew, with a cookie to keep it
        for cookie in ["pf-backend=gone", "pf-backend=old", "other=canary", ""] {
            let pick = split.pick(&headers(&[("cookie", cookie)]));
            let name = ["stable", "canary", "old"][pick.index];
            assert_ne!(name, "old");
            assert_eq!(
                pick.set_cookie.unwrap(),
                format!("pf-backend={name}; Path=/; HttpOnly; SameSite=Lax").as_str(),
                "{cookie}"
            );
        }
        assert!(split.pick(&HeaderMap::new()).set_cookie.is_some());
    }

    #[test]
    fn fnv1a_is_the_standard_one() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
