//! How a command ends: the exit code a script can tell apart, the error on stderr with a hint
//! where one helps, and standard output that a reader may close early (`| head -1`).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | the task or workflow ended unsuccessfully (failed, cancelled, expired) |
//! | 2 | usage: a bad flag or value, an unreadable file (clap's own usage errors are 2 too) |
//! | 3 | not found: no such task, workflow, schedule, queue or token |
//! | 4 | timed out waiting |
//! | 5 | the server is unreachable or unavailable (503) |
//! | 6 | refused by the server (any other 4xx: invalid, conflict, forbidden, ...) |
//! | 7 | anything else (a 5xx, an unexpected answer) |

use std::io::Write;

use taskwarden_client::ClientError;

pub const UNSUCCESSFUL: u8 = 1;
pub const USAGE: u8 = 2;
pub const NOT_FOUND: u8 = 3;
pub const TIMED_OUT: u8 = 4;
pub const UNAVAILABLE: u8 = 5;
pub const REFUSED: u8 = 6;
pub const OTHER: u8 = 7;

/// A bad flag value or an unreadable input file: exit 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Returns a usage error (exit 2) from the enclosing function.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::Usage(format!($($arg)*))))
    };
}
pub(crate) use usage;

/// A task or workflow that ended other than succeeded: exit 1.
#[derive(Debug)]
pub struct Unsuccessful(pub String);

impl std::fmt::Display for Unsuccessful {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsuccessful {}

/// The exit code for an error, from the first error in its chain that says what went wrong.
pub fn code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<Usage>() {
            return USAGE;
        }
        if cause.is::<Unsuccessful>() {
            return UNSUCCESSFUL;
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::WaitTimeout(_) => TIMED_OUT,
                ClientError::Transport(t) if t.is_timeout() => TIMED_OUT,
                ClientError::Transport(_) => UNAVAILABLE,
                ClientError::Api { status: 404, .. } => NOT_FOUND,
                ClientError::Api { status: 503, .. } => UNAVAILABLE,
                ClientError::Api { status: 400..=499, .. } => REFUSED,
                ClientError::Invalid(_) => USAGE,
                _ => OTHER,
            };
        }
        if cause.is::<std::io::Error>() {
            return OTHER;
        }
    }
    OTHER
}

/// Prints the error on stderr: once, with its causes, and a hint when the server cannot be
/// reached.
pub fn report(err: &anyhow::Error) {
    let transport = err.chain().find_map(|c| match c.downcast_ref::<ClientError>() {
        Some(ClientError::Transport(t)) => Some(t),
        _ => None,
    });
    match transport {
        Some(t) => {
            // reqwest's message repeats its causes' words; the innermost one says what happened.
            let mut root: &dyn std::error::Error = t;
            while let Some(next) = root.source() {
                root = next;
            }
            let url = t.url().map(|u| format!(" at {}", u.origin().ascii_serialization())).unwrap_or_default();
            let what = if t.is_timeout() { "timed out".to_owned() } else { root.to_string() };
            eprintln!("error: cannot reach the server{url}: {what}");
            if t.is_connect() {
                eprintln!(
                    "hint: is `taskwarden server` running there? Start one with `taskwarden server`, or point \
                     --url (TASKWARDEN_URL) at a running one"
                );
            }
        }
        None => eprintln!("error: {err:#}"),
    }
}

/// Writes one line of output. A reader that went away (`taskwarden task list | head -1`) ends
/// the process quietly with success, as it would any Unix tool, instead of a panic.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(i32::from(OTHER));
    }
}

/// `println!` for command output, through [`line`].
macro_rules! out {
    () => { $crate::exit::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::exit::line(format_args!($($arg)*)) };
}
pub(crate) use out;
