//! Online backup and restore of the embedded store.
//!
//! A backup is SQLite's `VACUUM INTO` on a connection of its own: one read transaction, so the
//! copy holds exactly what had committed when it began, taken while a server goes on writing (in
//! WAL mode a reader blocks no writer). It is written beside its destination, synced, then
//! renamed into place, so a crash mid-way leaves no half a backup under the name asked for.
//!
//! A restore checks the copy (integrity, a schema this build knows), puts it in place the same
//! way, migrates it, and treats every lease in it as expired: the workers that held them were
//! talking to the store the backup was taken from, so their tasks run again (a late report from
//! one of them carries a fencing token the restored task no longer matches, or one it matches
//! only while that very attempt is still the current one).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{internal, open, schema};
use crate::{Result, StoreError};

/// What a backup or a restore copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupReport {
    pub bytes: u64,
    pub tasks: u64,
    /// Running tasks whose leases the restore expired (0 for a backup).
    pub leases_expired: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// `path` with `suffix` added to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens an existing database, never creating one.
fn open_existing(path: &Path, flags: OpenFlags) -> Result<Connection> {
    if !path.is_file() {
        return Err(StoreError::NotFound);
    }
    Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(internal)
}

fn tasks_in(conn: &Connection) -> Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(internal)
}

/// Syncs the file at `path`, renames it to `to`, and syncs the directory the name is in.
fn sync_and_rename(path: &Path, to: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| io("open", path, e))?;
    file.sync_all().map_err(|e| io("sync", path, e))?;
    let bytes = file.metadata().map_err(|e| io("read", path, e))?.len();
    std::fs::rename(path, to).map_err(|e| io("rename into", to, e))?;
    let dir = to.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("sync", dir, e))?;
    Ok(bytes)
}

/// Copies the database at `db` into the new file `out` (which must not exist), consistently,
/// while a server may be using it.
pub fn backup(db: &Path, out: &Path) -> Result<BackupReport> {
    if out.exists() {
        return Err(StoreError::Conflict(format!("{} exists already", out.display())));
    }
    let conn = open_existing(db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(internal)?;
    let partial = beside(out, ".partial");
    let _ = std::fs::remove_file(&partial);
    let path = partial.to_str().ok_or_else(|| StoreError::Internal("the backup path is not UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [path]).map_err(internal)?;
    drop(conn);
    let copy = open_existing(&partial, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let tasks = tasks_in(&copy)?;
    drop(copy);
    let bytes = sync_and_rename(&partial, out)?;
    Ok(BackupReport { bytes, tasks, leases_expired: 0 })
}

/// Puts the backup `from` in place as the database at `db`. An existing database there is
/// replaced only with `replace` (its server must be stopped first).
pub fn restore(from: &Path, db: &Path, replace: bool) -> Result<BackupReport> {
    let copy = open_existing(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(internal)?;
    if check != "ok" {
        return Err(StoreError::Conflict(format!("{} is damaged: {check}", from.display())));
    }
    let version: usize = copy.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(internal)?;
    if version > schema::MIGRATIONS.len() {
        return Err(StoreError::Conflict(format!(
            "{} was written by a newer Taskwarden (schema {version}; this build knows {})",
            from.display(),
            schema::MIGRATIONS.len()
        )));
    }
    drop(copy);
    if db.exists() && !replace {
        return Err(StoreError::Conflict(format!(
            "{} exists already (stop its server, then restore with replace)",
            db.display()
        )));
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    }
    let partial = beside(db, ".restoring");
    std::fs::copy(from, &partial).map_err(|e| io("copy to", &partial, e))?;
    // The database's old log and index go with it: left, they would be replayed over the copy.
    for suffix in ["-wal", "-shm"] {
        match std::fs::remove_file(beside(db, suffix)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", &beside(db, suffix), e)),
            _ => {}
        }
    }
    let bytes = sync_and_rename(&partial, db)?;
    let mut conn = open(db).map_err(internal)?;
    schema::migrate(&mut conn).map_err(internal)?;
    let leases_expired =
        conn.execute("UPDATE tasks SET lease_expires_at = 0 WHERE state = 'running'", []).map_err(internal)? as u64;
    conn.execute("DELETE FROM leases", []).map_err(internal)?;
    let tasks = tasks_in(&conn)?;
    Ok(BackupReport { bytes, tasks, leases_expired })
}
