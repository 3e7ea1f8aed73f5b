//! PostgreSQL clusters of a test's own: made with `initdb` as the `postgres` user (the tests run
//! as root), on free ports, stopped immediately when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the test runs as root (needed to run PostgreSQL as its own user, and for namespaces).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
}

/// The directory of PostgreSQL's server binaries (`initdb`, `pg_ctl`, `pg_basebackup`).
pub fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path().join("bin")).collect();
    versions.sort();
    versions.into_iter().rev().find(|b| b.join("initdb").exists())
}

/// Runs a PostgreSQL program as the `postgres` user; panics with its output if it fails.
pub fn as_postgres(bin: &Path, program: &str, args: &[&str]) -> String {
    as_postgres_in(None, bin, program, args)
}

/// A command running `program` as the `postgres` user, inside the network namespace `netns` if
/// one is given.
fn postgres_command(netns: Option<&str>, bin: &Path, program: &str) -> Command {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "runuser"]);
            c
        }
        None => Command::new("runuser"),
    };
    command.args(["-u", "postgres", "--"]).arg(bin.join(program));
    command
}

/// [`as_postgres`] inside the network namespace `netns`, if one is given.
pub fn as_postgres_in(netns: Option<&str>, bin: &Path, program: &str, args: &[&str]) -> String {
    let out = postgres_command(netns, bin, program).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

/// One PostgreSQL cluster of the test's, stopped (immediately) when dropped.
pub struct Cluster {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    /// The network namespace it runs in, if not the test's.
    pub netns: Option<String>,
}

impl Cluster {
    pub fn start(&self) {
        let log = self.dir.with_extension("log");
        as_postgres_in(
            self.netns.as_deref(),
            &self.bin,
            "pg_ctl",
            &["-D", self.dir.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "start"],
        );
    }

    pub fn postmaster_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.join("postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    pub fn sql(&self, query: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres", "-Atc", query])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = postgres_command(self.netns.as_deref(), &self.bin, "pg_ctl")
            .args(["-D", self.dir.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}
