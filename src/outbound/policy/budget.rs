//! The retry budget of a destination: over any `window` (1 s by default),
//! retries may number at most `ratio` of the requests that started in it,
//! but `min_per_second` retries a second are always allowed. The floor is
//! the larger of the two, not an addition, so at 40 requests a second the
//! defaults (20%, 5/s) allow 8 retries a second, and at 10 requests 5.
//!
//! The window is short on purpose. tower's `TpsBudget` (Finagle's design,
//! which Linkerd's 10 s budget follows) keeps `min_per_second × window`
//! retries in a standing reserve and credits the requests of the whole
//! window, so an outage that follows healthy traffic first spends the
//! reserve and the healthy traffic's credit: a burst of retries in the
//! outage's first seconds, when they help least. Counted over one second,
//! retries follow the traffic of that second.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The window rolls in this many steps.
const SLOTS: usize = 10;

/// The budget of one destination.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// Retries always allowed per window.
    floor: f64,
    slot: Duration,
    epoch: Instant,
    slots: Mutex<[Slot; SLOTS]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which slot since the epoch this is.
    number: u64,
    requests: u32,
    retries: u32,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request over `window`, with
    /// `min_per_second` always allowed.
    pub fn new(ratio: f64, min_per_second: u32, window: Duration, now: Instant) -> Self {
        let window = window.max(Duration::from_millis(SLOTS as u64));
        Self {
            ratio: ratio.max(0.0),
            floor: f64::from(min_per_second) * window.as_secs_f64(),
            slot: window / SLOTS as u32,
            epoch: now,
            slots: Mutex::new([Slot::default(); SLOTS]),
        }
    }

    /// A request starts (its retries do not count as requests).
    pub fn deposit(&self, now: Instant) {
        self.update(now, |slot| slot.requests = slot.requests.saturating_add(1));
    }

    /// Spends one retry if the budget allows it.
    pub fn withdraw(&self, now: Instant) -> bool {
        let number = self.number(now);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = number.saturating_sub(SLOTS as u64 - 1);
        let (requests, retries) = slots
            .iter()
            .filter(|s| s.number >= oldest && s.number <= number)
            .fold((0u64, 0u64), |(q, r), s| {
                (q + u64::from(s.requests), r + u64::from(s.retries))
            });
        let allowed = (self.ratio * requests as f64).max(self.floor);
        if (retries + 1) as f64 > allowed {
            return false;
        }
        let slot = current(&mut slots, number);
        slot.retries = slot.retries.saturating_add(1);
        true
    }

    fn update(&self, now: Instant, change: impl FnOnce(&mut Slot)) {
        let number = self.number(now);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        change(current(&mut slots, number));
    }

    fn number(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        (nanos / self.slot.as_nanos().max(1)) as u64
    }
}

/// The slot for `number`, emptied if it last held an older one.
fn current(slots: &mut [Slot; SLOTS], number: u64) -> &mut Slot {
    let slot = &mut slots[(number % SLOTS as u64) as usize];
    if slot.number != number {
        *slot = Slot {
            number,
            ..Slot::default()
        };
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries_allowed(budget: &RetryBudget, now: Instant) -> usize {
        (0..1000).take_while(|_| budget.withdraw(now)).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_of_this_second_or_the_floor_whichever_is_more() {
        let now = Instant::now();
        let budget = RetryBudget::new(0.2, 5, Duration::from_secs(1), now);
        assert_eq!(
            retries_allowed(&budget, now),
            5,
            "the floor with no traffic"
        );

        let budget = RetryBudget::new(0.2, 5, Duration::from_secs(1), now);
        for _ in 0..100 {
            budget.deposit(now);
        }
        assert_eq!(retries_allowed(&budget, now), 20, "20% of 100, not 20 + 5");
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_traffic_from_before_an_outage_buys_no_burst() {
        let start = Instant::now();
        let budget = RetryBudget::new(0.2, 5, Duration::from_secs(1), start);
        // Ten seconds of 40 requests a second, none retried.
        for ms in (0..10_000).step_by(25) {
            budget.deposit(start + Duration::from_millis(ms));
        }
        // Then everything fails, still at 40 a second: each request asks
        // for a retry. Over five seconds, 8 a second are allowed.
        let mut retried = 0;
        for ms in (10_000..15_000).step_by(25) {
            let at = start + Duration::from_millis(ms);
            budget.deposit(at);
            retried += usize::from(budget.withdraw(at));
        }
        assert!(
            (38..=50).contains(&retried),
            "{retried} retries for 200 requests"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn spent_retries_return_as_the_window_moves_on() {
        let now = Instant::now();
        let budget = RetryBudget::new(0.2, 3, Duration::from_secs(1), now);
        assert_eq!(retries_allowed(&budget, now), 3);
        let later = now + Duration::from_millis(500);
        assert_eq!(retries_allowed(&budget, later), 0, "still in the window");
        let after = now + Duration::from_millis(1000);
        assert_eq!(retries_allowed(&budget, after), 3);
    }
}
