//! Exponential backoff with full jitter: before retry `n` (1, 2, ...) wait
//! a random time in `[0, min(max, base * 2^n))`. Random waits keep clients
//! that failed together from retrying together.

use std::time::Duration;

/// The wait before retry `n`, from a random `unit` in `[0, 1)`.
pub fn full_jitter(base: Duration, max: Duration, n: u32, unit: f64) -> Duration {
    let ceiling = base.saturating_mul(2u32.saturating_pow(n.min(31))).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// The wait before retry `n`, with a fresh random draw.
pub fn next(base: Duration, max: Duration, n: u32) -> Duration {
    full_jitter(base, max, n, fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_then_cap() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(250);
        let ceilings = [50, 100, 200, 250, 250];
        for (n, ceiling) in (1..).zip(ceilings) {
            assert_eq!(
                full_jitter(base, max, n, 1.0),
                Duration::from_millis(ceiling),
                "retry {n}"
            );
            assert_eq!(full_jitter(base, max, n, 0.0), Duration::ZERO);
        }
        assert_eq!(
            full_jitter(base, max, 40, 0.5),
            Duration::from_millis(125),
            "no overflow"
        );
    }

    #[test]
    fn random_waits_stay_in_range_and_spread() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(250);
        let waits: Vec<Duration> = (0..1000).map(|_| next(base, max, 2)).collect();
        assert!(waits.iter().all(|w| *w < Duration::from_millis(100)));
        let low = waits
            .iter()
            .filter(|w| **w < Duration::from_millis(50))
            .count();
        assert!(
            (300..700).contains(&low),
            "not uniform: {low} of 1000 below half"
        );
    }
}
