//! Outlier ejection of one endpoint, as a small state machine driven by
//! the outcomes of real requests and the clock (passed in, so tests run on
//! paused time):
//!
//! ```text
//! Healthy --N failures in a row--> Ejected(until) --time passes--> Probing
//! Probing --the one probe succeeds--> Healthy
//! Probing --the probe fails--> Ejected(longer)
//! ```
//!
//! Each ejection of the same endpoint lasts `base * ejections`, up to
//! `max`; the count resets after the endpoint stays healthy for `max`.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::OutlierConfig;

/// The ejection settings of a destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierPolicy {
    /// On or off.
    pub enabled: bool,
    /// Failures in a row that eject.
    pub consecutive_failures: u32,
    /// First ejection time.
    pub base: Duration,
    /// Longest ejection.
    pub max: Duration,
    /// Most endpoints ejected at once, in percent (always at least one).
    pub max_ejected_percent: u32,
}

impl OutlierPolicy {
    /// The settings of a config section.
    pub fn from_config(config: &OutlierConfig) -> Self {
        Self {
            enabled: config.enabled,
            consecutive_failures: *config.consecutive_failures,
            base: config.base_ejection.0,
            max: config.max_ejection.0.max(config.base_ejection.0),
            max_ejected_percent: *config.max_ejected_percent,
        }
    }

    /// How many of `total` endpoints may be ejected at once.
    pub fn max_ejected(&self, total: usize) -> usize {
        (total * self.max_ejected_percent as usize / 100).max(1)
    }
}

/// Whether an endpoint may take the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Healthy.
    Yes,
    /// Its ejection is over: the next request is its one probe.
    Probe,
    /// Ejected, or its probe is out.
    No,
}

/// The health of one endpoint.
#[derive(Debug, Clone, Default)]
pub struct Health {
    failures_in_a_row: u32,
    ejections: u32,
    healthy_since: Option<Instant>,
    state: State,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Healthy,
    Ejected {
        until: Instant,
    },
    Probing {
        probe_out: bool,
    },
}

impl Health {
    /// Whether the endpoint may take a request at `now` (nothing changes).
    pub fn admit(&self, now: Instant) -> Admit {
        match self.state {
            State::Healthy => Admit::Yes,
            State::Ejected { until } if now >= until => Admit::Probe,
            State::Probing { probe_out: false } => Admit::Probe,
            State::Ejected { .. } | State::Probing { probe_out: true } => Admit::No,
        }
    }

    /// Sends the probe: no other request until its outcome is recorded
    /// (or [`Health::probe_abandoned`]).
    pub fn probe_sent(&mut self) {
        self.state = State::Probing { probe_out: true };
    }

    /// The probe ended without an outcome (the client went away): the
    /// next request may probe.
    pub fn probe_abandoned(&mut self) {
        if self.state == (State::Probing { probe_out: true }) {
            self.state = State::Probing { probe_out: false };
        }
    }

    /// Whether it is out of rotation (ejected or on probation).
    pub fn is_ejected(&self) -> bool {
        self.state != State::Healthy
    }

    /// Until when it is ejected, if it is.
    pub fn ejected_until(&self) -> Option<Instant> {
        match self.state {
            State::Ejected { until } => Some(until),
            _ => None,
        }
    }

    /// Records an outcome. `may_eject` says whether the destination can
    /// afford one more ejected endpoint. Returns the end of a new ejection.
    pub fn record(
        &mut self,
        failed: bool,
        now: Instant,
        policy: &OutlierPolicy,
        may_eject: bool,
    ) -> Option<Instant> {
        if !policy.enabled {
            return None;
        }
        if !failed {
            self.failures_in_a_row = 0;
            if self.state != State::Healthy {
                self.state = State::Healthy;
                self.healthy_since = Some(now);
            }
            if self
                .healthy_since
                .is_some_and(|t| now.duration_since(t) >= policy.max)
            {
                self.ejections = 0;
            }
            return None;
        }
        self.failures_in_a_row += 1;
        let eject = match self.state {
            State::Probing { .. } => true,
            State::Healthy => self.failures_in_a_row >= policy.consecutive_failures && may_eject,
            State::Ejected { .. } => false,
        };
        if !eject {
            return None;
        }
        self.ejections = self.ejections.saturating_add(1);
        let time = policy.base.saturating_mul(self.ejections).min(policy.max);
        let until = now + time;
        self.state = State::Ejected { until };
        self.failures_in_a_row = 0;
        self.healthy_since = None;
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            enabled: true,
            consecutive_failures: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(25),
            max_ejected_percent: 50,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_grows_and_a_probe_decides() {
        let p = policy();
        let mut h = Health::default();
        let now = Instant::now();
        assert_eq!(h.record(true, now, &p, true), None);
        assert_eq!(h.record(true, now, &p, true), None);
        assert_eq!(
            h.record(true, now, &p, true),
            Some(now + Duration::from_secs(10))
        );
        assert_eq!(h.admit(now), Admit::No);

        // After the ejection, one probe; it fails: ejected twice as long.
        let later = now + Duration::from_secs(10);
        assert_eq!(h.admit(later), Admit::Probe);
        h.probe_sent();
        assert_eq!(h.admit(later), Admit::No, "only one probe at a time");
        assert_eq!(
            h.record(true, later, &p, true),
            Some(later + Duration::from_secs(20))
        );

        // The third ejection is capped at max.
        let t = later + Duration::from_secs(20);
        h.probe_sent();
        assert_eq!(
            h.record(true, t, &p, true),
            Some(t + Duration::from_secs(25))
        );

        // A successful probe restores it.
        let t = t + Duration::from_secs(25);
        assert_eq!(h.admit(t), Admit::Probe);
        h.probe_sent();
        assert_eq!(h.record(false, t, &p, true), None);
        assert_eq!(h.admit(t), Admit::Yes);
        assert!(!h.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_count_and_limits_hold() {
        let p = policy();
        let mut h = Health::default();
        let now = Instant::now();
        h.record(true, now, &p, true);
        h.record(true, now, &p, true);
        h.record(false, now, &p, true);
        h.record(true, now, &p, true);
        assert_eq!(h.admit(now), Admit::Yes, "failures must be in a row");
        h.record(true, now, &p, false);
        assert_eq!(
            h.record(true, now, &p, false),
            None,
            "the destination cannot spare it"
        );
        assert_eq!(h.admit(now), Admit::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot() {
        let p = policy();
        let mut h = Health::default();
        let now = Instant::now();
        for _ in 0..3 {
            h.record(true, now, &p, true);
        }
        let later = now + Duration::from_secs(10);
        h.probe_sent();
        h.probe_abandoned();
        assert_eq!(h.admit(later), Admit::Probe);
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected() {
        let p = OutlierPolicy {
            max_ejected_percent: 10,
            ..policy()
        };
        assert_eq!(p.max_ejected(3), 1);
        assert_eq!(p.max_ejected(20), 2);
        assert_eq!(policy().max_ejected(4), 2);
    }
}
