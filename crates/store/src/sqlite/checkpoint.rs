//! Checkpoints off the write path.
//!
//! A checkpoint copies the write-ahead log back into the database file and syncs that file. By
//! default SQLite runs one inside whichever commit takes the log past 1,000 pages, and that
//! commit's caller waits for the copy and the sync: milliseconds, on whichever thread committed
//! (an async worker thread, for a small write; see `Writer::write_small`). So the writer's
//! connection only checkpoints as a backstop, past [`BACKSTOP_PAGES`], and this thread
//! checkpoints every [`INTERVAL`] from a connection of its own. A passive checkpoint never blocks
//! the writer or a reader: it copies what no reader still needs and leaves the rest for next time.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

/// How often the log is copied back.
const INTERVAL: Duration = Duration::from_millis(100);

/// Log pages past which the writer's own commit checkpoints anyway (should this thread fall far
/// behind): about 40 MiB of log.
pub(crate) const BACKSTOP_PAGES: u32 = 10_000;

/// The checkpointing thread; it stops when this is dropped.
pub(crate) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    pub fn spawn(conn: Connection) -> Checkpointer {
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("taskwarden-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "checkpointing the write-ahead log failed; trying again");
                    }
                }
            })
            .expect("spawn the SQLite checkpoint thread");
        Checkpointer { _stop: stop }
    }
}
