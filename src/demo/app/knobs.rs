//! Failure knobs, so the mesh's resilience features have something to
//! handle: a share of requests answered with 503, a share whose connection
//! is dropped without an answer (a crash mid-request), a delay before every
//! answer, or no answer at all.
//!
//! Set service-wide from the environment (`DEMO_FAIL_RATE`,
//! `DEMO_RESET_RATE`, `DEMO_DELAY`, `DEMO_HANG`) or at run time with
//! `POST /knobs?fail=..&reset=..&delay=..&hang=..`; overridden for one
//! request by the same query parameters on it.

use std::sync::Mutex;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::reply::{self, Body, query_param};

/// What the service does to each request before answering it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Knobs {
    /// Share of requests (0.0 to 1.0) answered 503 "injected failure".
    pub fail: f64,
    /// Share of requests (0.0 to 1.0) whose connection is dropped, no
    /// answer sent.
    pub reset: f64,
    /// Added before answering.
    pub delay: Duration,
    /// Accept requests but never answer.
    pub hang: bool,
}

/// A knob value that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name}={value:?} is not valid: {why}")]
pub struct KnobError {
    name: &'static str,
    value: String,
    why: String,
}

/// What to do with one request, decided from the knobs and dice rolls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Never answer.
    Hang,
    /// Drop the connection without an answer.
    Reset,
    /// Wait this long, then answer 503 (`true`) or serve the request.
    Answer {
        /// Added delay.
        delay: Duration,
        /// Answer 503 instead of serving.
        fail: bool,
    },
}

impl Knobs {
    /// The knobs in `DEMO_FAIL_RATE`, `DEMO_DELAY` and `DEMO_HANG`.
    pub fn from_env() -> Result<Self, KnobError> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut knobs = Self::default();
        if let Some(v) = var("DEMO_FAIL_RATE") {
            knobs.fail = parse_fail("DEMO_FAIL_RATE", &v)?;
        }
        if let Some(v) = var("DEMO_RESET_RATE") {
            knobs.reset = parse_fail("DEMO_RESET_RATE", &v)?;
        }
        if let Some(v) = var("DEMO_DELAY") {
            knobs.delay = parse_delay("DEMO_DELAY", &v)?;
        }
        if let Some(v) = var("DEMO_HANG") {
            knobs.hang = parse_hang("DEMO_HANG", &v)?;
        }
        Ok(knobs)
    }

    /// These knobs with any of `fail`, `delay`, `hang` in `query` instead.
    pub fn with_query(mut self, query: Option<&str>) -> Result<Self, KnobError> {
        if let Some(v) = query_param(query, "fail") {
            self.fail = parse_fail("fail", v)?;
        }
        if let Some(v) = query_param(query, "reset") {
            self.reset = parse_fail("reset", v)?;
        }
        if let Some(v) = query_param(query, "delay") {
            self.delay = parse_delay("delay", v)?;
        }
        if let Some(v) = query_param(query, "hang") {
            self.hang = parse_hang("hang", v)?;
        }
        Ok(self)
    }

    /// Decides the fate of one request; the rolls (for a reset, then for
    /// a failure) are uniform in `[0, 1)`.
    pub fn decide(&self, reset_roll: f64, fail_roll: f64) -> Verdict {
        if self.hang {
            return Verdict::Hang;
        }
        if reset_roll < self.reset {
            return Verdict::Reset;
        }
        Verdict::Answer {
            delay: self.delay,
            fail: fail_roll < self.fail,
        }
    }

    /// The knobs as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "fail": self.fail,
            "reset": self.reset,
            "delay": humantime::format_duration(self.delay).to_string(),
            "hang": self.hang,
        })
    }
}

/// The reset knob fired: the connection goes without an answer.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("connection dropped by the reset knob")]
pub struct Reset;

/// Carries out the knobs for one request: `Ok(Some(response))` to answer
/// with instead of serving it, `Err(Reset)` to drop the connection; never
/// returns when the service hangs.
pub async fn apply(knobs: Knobs) -> Result<Option<http::Response<Body>>, Reset> {
    match knobs.decide(fastrand::f64(), fastrand::f64()) {
        Verdict::Hang => std::future::pending().await,
        Verdict::Reset => Err(Reset),
        Verdict::Answer { delay, fail } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(fail.then(|| reply::text(StatusCode::SERVICE_UNAVAILABLE, "injected failure")))
        }
    }
}

/// `GET /knobs` shows the service-wide knobs; `POST /knobs?...` changes
/// the ones named in the query and shows the result.
pub fn endpoint(
    knobs: &Mutex<Knobs>,
    method: &Method,
    query: Option<&str>,
) -> http::Response<Body> {
    // A panic while holding the lock cannot leave the knobs half-written.
    let mut current = knobs
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match *method {
        Method::GET => reply::json(StatusCode::OK, &current.to_json()),
        Method::POST => match current.with_query(query) {
            Ok(new) => {
                *current = new;
                reply::json(StatusCode::OK, &new.to_json())
            }
            Err(e) => reply::error(StatusCode::BAD_REQUEST, e),
        },
        _ => reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET /knobs to read the knobs, POST /knobs?fail=0.5&reset=0&delay=100ms&hang=0 to set them",
        ),
    }
}

fn parse_fail(name: &'static str, text: &str) -> Result<f64, KnobError> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(knob_error(name, text, "expected a number from 0.0 to 1.0")),
    }
}

fn parse_delay(name: &'static str, text: &str) -> Result<Duration, KnobError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        knob_error(
            name,
            text,
            &format!("{e} (expected a duration such as 200ms or 1s)"),
        )
    })
}

fn parse_hang(name: &'static str, text: &str) -> Result<bool, KnobError> {
    match text.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(knob_error(name, text, "expected 1 or 0")),
    }
}

fn knob_error(name: &'static str, value: &str, why: &str) -> KnobError {
    KnobError {
        name,
        value: value.to_owned(),
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_overrides_only_the_knobs_it_names() {
        let base = Knobs {
            fail: 0.1,
            delay: Duration::from_millis(5),
            ..Knobs::default()
        };
        let knobs = base.with_query(Some("delay=200ms&n=3")).ok();
        assert_eq!(
            knobs,
            Some(Knobs {
                delay: Duration::from_millis(200),
                ..base
            })
        );
        assert_eq!(base.with_query(None).ok(), Some(base));
    }

    #[test]
    fn bad_values_are_refused_with_the_parameter_name() {
        let cases = [
            (
                "fail=1.5",
                "fail=\"1.5\" is not valid: expected a number from 0.0 to 1.0",
            ),
            (
                "fail=NaN",
                "fail=\"NaN\" is not valid: expected a number from 0.0 to 1.0",
            ),
            ("hang=yes", "hang=\"yes\" is not valid: expected 1 or 0"),
        ];
        for (query, message) in cases {
            let err = Knobs::default().with_query(Some(query)).err();
            assert_eq!(
                err.map(|e| e.to_string()).as_deref(),
                Some(message),
                "{query}"
            );
        }
        let err = Knobs::default().with_query(Some("delay=soon")).err();
        assert!(err.is_some_and(|e| e.to_string().starts_with("delay=\"soon\" is not valid")));
    }

    #[test]
    fn decisions() {
        let fail_half = Knobs {
            fail: 0.5,
            ..Knobs::default()
        };
        let answer = |fail| Verdict::Answer {
            delay: Duration::ZERO,
            fail,
        };
        assert_eq!(fail_half.decide(0.0, 0.49), answer(true));
        assert_eq!(fail_half.decide(0.0, 0.5), answer(false));
        assert_eq!(Knobs::default().decide(0.0, 0.0), answer(false));
        let reset_all = Knobs {
            reset: 1.0,
            fail: 1.0,
            ..Knobs::default()
        };
        assert_eq!(reset_all.decide(0.99, 0.0), Verdict::Reset);
        let hang = Knobs {
            hang: true,
            fail: 1.0,
            ..Knobs::default()
        };
        assert_eq!(hang.decide(0.0, 0.0), Verdict::Hang);
    }
}
