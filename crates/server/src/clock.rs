//! The server's clock. Lease expiry, the leader lease, delayed tasks and cron use only this
//! clock, never a worker's; the core is handed its readings (it reads no clock itself).
//!
//! Which clock a server runs on follows from its store ([`for_store`]):
//! - a store that keeps time of its own (PostgreSQL) is the clock of every node that shares it
//!   ([`DatabaseClock`]), so a node whose clock is off neither expires leases early, nor keeps a
//!   lapsed leader's role, nor fires a cron tick twice;
//! - otherwise (the embedded store, one process) the wall clock as read at start, counted on
//!   with the monotonic clock ([`MonotonicClock`]): a step of the wall clock while the server
//!   runs neither expires leases early nor orders new tasks before older ones.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use taskwarden_core::Timestamp;
use taskwarden_store::Store;
use tokio_util::sync::CancellationToken;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock, read on every call (tests' clock; the server runs on one of
/// the two below).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// A reading of some clock, and the monotonic instant it was taken at: the time now is the
/// reading plus the monotonic time since.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    reading: Timestamp,
    at: Instant,
}

impl Anchor {
    /// The wall clock, read now.
    fn wall() -> Anchor {
        Anchor { reading: SystemClock.now(), at: Instant::now() }
    }

    fn now(&self) -> Timestamp {
        self.reading.saturating_add(self.at.elapsed())
    }
}

/// The wall clock read once, then counted on with the monotonic clock (which NTP slews but never
/// steps): a later step of the wall clock is taken up at the next start.
#[derive(Debug)]
pub struct MonotonicClock {
    anchor: Anchor,
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock { anchor: Anchor::wall() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Timestamp {
        self.anchor.now()
    }
}

/// How often a [`DatabaseClock`] reads the database's clock again.
pub const DATABASE_CLOCK_RESAMPLE: Duration = Duration::from_secs(5);

/// A sample whose round trip took longer than this says too little about when the database read
/// its clock: it is not taken.
const DATABASE_CLOCK_MAX_ROUND_TRIP: Duration = Duration::from_millis(500);

/// The database's clock, read every [`DATABASE_CLOCK_RESAMPLE`] and counted on with the
/// monotonic clock in between. A sample is placed at the middle of its round trip, so it is off
/// by at most half of one (sub-millisecond on a LAN; samples slower than half a second are not
/// taken). Readings never go backwards: when a new sample (or a new primary after a failover)
/// is a little behind, the clock holds still until it catches up.
pub struct DatabaseClock {
    anchor: Mutex<Anchor>,
    /// The latest reading given, in microseconds.
    last: AtomicI64,
}

impl DatabaseClock {
    fn anchored(anchor: Anchor) -> DatabaseClock {
        DatabaseClock { anchor: Mutex::new(anchor), last: AtomicI64::new(i64::MIN) }
    }

    /// Reads `store`'s clock once: `None` if it keeps none; an anchor placed at the middle of
    /// the round trip, unless that took too long to place it (then none, unless `any` is set).
    async fn sample(store: &dyn Store, any: bool) -> Result<Option<Anchor>, taskwarden_store::StoreError> {
        let sent = Instant::now();
        let Some(reading) = store.database_time().await? else { return Ok(None) };
        let round_trip = sent.elapsed();
        Ok((any || round_trip <= DATABASE_CLOCK_MAX_ROUND_TRIP).then(|| Anchor { reading, at: sent + round_trip / 2 }))
    }

    fn set(&self, anchor: Anchor) {
        *self.anchor.lock().unwrap_or_else(|e| e.into_inner()) = anchor;
    }

    /// Reads the store's clock again every [`DATABASE_CLOCK_RESAMPLE`] until `shutdown`.
    async fn keep_sampling(self: Arc<Self>, store: Arc<dyn Store>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(DATABASE_CLOCK_RESAMPLE) => {}
            }
            match DatabaseClock::sample(store.as_ref(), false).await {
                Ok(Some(anchor)) => self.set(anchor),
                Ok(None) => {}
                // The database is away: count on from the last sample meanwhile.
                Err(e) => tracing::debug!(error = %e, "could not read the database's clock"),
            }
        }
    }
}

impl Clock for DatabaseClock {
    fn now(&self) -> Timestamp {
        let now = self.anchor.lock().unwrap_or_else(|e| e.into_inner()).now().as_micros();
        let before = self.last.fetch_max(now, Ordering::Relaxed);
        Timestamp::from_micros(now.max(before))
    }
}

/// The clock a server on `store` runs on (see the module's note): the database's if the store
/// keeps one (sampled again in the background until `shutdown`), else the monotonic one. A
/// database that cannot be read at start is read again in the background; the server counts
/// from its own clock until then.
pub async fn for_store(store: Arc<dyn Store>, shutdown: CancellationToken) -> Arc<dyn Clock> {
    let anchor = match DatabaseClock::sample(store.as_ref(), true).await {
        Ok(None) => return Arc::new(MonotonicClock::new()),
        Ok(Some(anchor)) => anchor,
        // Only a store that keeps time can fail to tell it.
        Err(_) => Anchor::wall(),
    };
    let clock = Arc::new(DatabaseClock::anchored(anchor));
    tokio::spawn(clock.clone().keep_sampling(store, shutdown));
    clock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_clock_counts_on_from_its_sample_and_never_goes_back() {
        let start = Timestamp::from_micros(1_000_000_000);
        let clock = DatabaseClock::anchored(Anchor { reading: start, at: Instant::now() });
        let first = clock.now();
        assert!(first >= start && first < start.saturating_add(Duration::from_secs(1)));
        // A new sample a minute behind: readings hold still rather than go back.
        clock.set(Anchor { reading: start.saturating_sub(Duration::from_secs(60)), at: Instant::now() });
        let held = clock.now();
        assert!(held >= first);
        assert!(held < start.saturating_add(Duration::from_secs(1)));
        // A sample ahead is followed at once.
        let ahead = start.saturating_add(Duration::from_secs(3600));
        clock.set(Anchor { reading: ahead, at: Instant::now() });
        assert!(clock.now() >= ahead);
    }

    #[test]
    fn a_monotonic_clock_starts_at_the_wall_clock_and_counts_on() {
        let before = SystemClock.now();
        let clock = MonotonicClock::new();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        let b = clock.now();
        assert!(a >= before && b.duration_since(a) >= Duration::from_millis(5));
    }
}
