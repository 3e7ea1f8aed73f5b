//! Retry backoff: exponential growth with jitter, kept within a minimum and a maximum.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::duration_ms;

/// How long a task waits before its next attempt after a retryable failure.
///
/// The base delay for attempt `n` (1-based) is `min * multiplier^(n-1)`, capped at `max`. Jitter
/// then takes away up to `jitter` of it (a fraction in `[0, 1]`), so that tasks that failed together
/// do not all come back at the same instant; the result never drops below `min`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(rename = "min_ms", with = "duration_ms")]
    #[schema(value_type = u64, minimum = 0, maximum = 31_622_400_000_u64)]
    pub min: Duration,
    #[serde(rename = "max_ms", with = "duration_ms")]
    #[schema(value_type = u64, minimum = 0, maximum = 31_622_400_000_u64)]
    pub max: Duration,
    #[schema(minimum = 1.0, maximum = 100.0)]
    pub multiplier: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { min: Duration::from_secs(1), max: Duration::from_secs(300), multiplier: 2.0, jitter: 0.2 }
    }
}

impl Backoff {
    /// The delay before the attempt that follows failed attempt `attempt` (1-based).
    /// `random` is a uniform draw from `[0, 1)` supplied by the caller.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let min = self.min.as_secs_f64();
        let max = self.max.as_secs_f64().max(min);
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let base = (min * self.multiplier.max(1.0).powi(exponent)).min(max);
        let jitter = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        let secs = (base * (1.0 - jitter)).clamp(min, max);
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_exponentially_until_the_cap() {
        let b = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0, jitter: 0.0 };
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n, 0.5).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    proptest! {
        #[test]
        fn delay_stays_within_bounds(
            min_ms in 0u64..10_000, extra_ms in 0u64..100_000, multiplier in 1.0f64..10.0,
            jitter in 0.0f64..=1.0, attempt in 0u32..100, random in 0.0f64..1.0,
        ) {
            let b = Backoff { min: Duration::from_millis(min_ms), max: Duration::from_millis(min_ms + extra_ms), multiplier, jitter };
            let d = b.delay(attempt, random);
            prop_assert!(d >= b.min.saturating_sub(Duration::from_micros(1)));
            prop_assert!(d <= b.max + Duration::from_micros(1));
        }

        #[test]
        fn base_delay_never_shrinks_with_attempts(min_ms in 1u64..1000, multiplier in 1.0f64..4.0, attempt in 1u32..60) {
            let b = Backoff { min: Duration::from_millis(min_ms), max: Duration::from_secs(3600), multiplier, jitter: 0.0 };
            prop_assert!(b.delay(attempt + 1, 0.0) >= b.delay(attempt, 0.0));
        }
    }
}
