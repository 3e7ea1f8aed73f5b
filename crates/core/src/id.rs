//! Identifiers: time-ordered task ids and opaque lease tokens.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::time::Timestamp;

/// A task id: a UUIDv7, so ids sort by creation time (and, from one generator, by creation order).
///
/// Written in the hyphenated form only (`0192f0c1-7e2a-7c3b-9d4e-5f6a7b8c9d0e`), as the OpenAPI
/// document's `uuid` format says.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TaskId {
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        TaskId(Uuid::from_bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The smallest id made at `t`'s millisecond: ids of tasks created at or after `t` are at
    /// least this, those created before are less.
    pub fn first_at(t: Timestamp) -> TaskId {
        let ms = t.as_millis().clamp(0, (1 << 48) - 1);
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        TaskId::from_bytes(b)
    }

    /// The millisecond timestamp embedded in the id.
    pub fn created_millis(&self) -> i64 {
        let b = self.0.as_bytes();
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&b[..6]);
        i64::from_be_bytes(ms)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a task id (a UUID written with hyphens)");
        if s.len() != 36 {
            return Err(bad());
        }
        Uuid::try_parse(s).map(TaskId).map_err(|_| bad())
    }
}

/// Makes strictly increasing UUIDv7 ids.
///
/// Layout: 48 bits of Unix milliseconds, the version, a 12-bit counter that orders ids made in
/// the same millisecond, the variant, and 62 random bits. When the clock stands still or steps
/// back, the generator keeps its last millisecond and counts on, so ids never go backwards.
#[derive(Debug, Default, Clone)]
pub struct IdGenerator {
    last_ms: u64,
    counter: u16,
}

impl IdGenerator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn next(&mut self, now: Timestamp, random: u64) -> TaskId {
        let now_ms = now.as_millis().max(0) as u64 & 0xFFFF_FFFF_FFFF;
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.counter = 0;
        } else {
            self.counter += 1;
            if self.counter > 0x0FFF {
                self.last_ms += 1;
                self.counter = 0;
            }
        }
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&self.last_ms.to_be_bytes()[2..]);
        b[6] = 0x70 | (self.counter >> 8) as u8;
        b[7] = (self.counter & 0xFF) as u8;
        b[8..].copy_from_slice(&random.to_be_bytes());
        b[8] = 0x80 | (b[8] & 0x3F);
        TaskId::from_bytes(b)
    }
}

/// The fencing token of one lease. A worker must present it on every call about the task; a call
/// carrying an older lease's token is refused, so a worker that lost its lease cannot overwrite the
/// work of the attempt that replaced it.
///
/// Serialized as a 16-digit hex string, since JSON numbers lose precision past 2^53.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LeaseToken(pub u64);

impl LeaseToken {
    /// A fresh token from a random number; never the hidden value.
    pub fn from_random(r: u64) -> LeaseToken {
        LeaseToken(r.max(1))
    }

    /// The value a token reads as where it is not shown.
    pub fn hidden() -> LeaseToken {
        LeaseToken(0)
    }

    pub fn is_hidden(&self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for LeaseToken {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(LeaseToken)
    }
}

impl Serialize for LeaseToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LeaseToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom("expected a lease token of 1 to 16 hex digits"));
        }
        s.parse().map_err(|_| serde::de::Error::custom("expected a lease token of hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_uuid_v7() {
        let mut g = IdGenerator::new();
        let id = g.next(Timestamp::from_millis(1_700_000_000_000), 42);
        assert_eq!(id.0.get_version_num(), 7);
        assert_eq!(id.created_millis(), 1_700_000_000_000);
    }

    proptest! {
        #[test]
        fn generated_ids_strictly_increase(steps in proptest::collection::vec((-5i64..50, any::<u64>()), 1..300)) {
            let mut g = IdGenerator::new();
            let mut now = 1_700_000_000_000i64;
            let mut last: Option<TaskId> = None;
            for (dt, r) in steps {
                now += dt; // the clock may stand still or step back
                let id = g.next(Timestamp::from_millis(now), r);
                if let Some(prev) = last {
                    prop_assert!(id > prev, "{id} <= {prev}");
                }
                let parsed: TaskId = id.to_string().parse().unwrap();
                prop_assert_eq!(parsed, id);
                last = Some(id);
            }
        }

        #[test]
        fn first_at_bounds_the_ids_made_in_a_millisecond(ms in 0i64..(1 << 47), r in any::<u64>()) {
            let id = IdGenerator::new().next(Timestamp::from_millis(ms), r);
            prop_assert!(TaskId::first_at(Timestamp::from_millis(ms)) <= id);
            prop_assert!(id < TaskId::first_at(Timestamp::from_millis(ms + 1)));
        }

        #[test]
        fn lease_tokens_round_trip(t in any::<u64>()) {
            let s = serde_json::to_string(&LeaseToken(t)).unwrap();
            let back: LeaseToken = serde_json::from_str(&s).unwrap();
            prop_assert_eq!(back, LeaseToken(t));
        }
    }
}
