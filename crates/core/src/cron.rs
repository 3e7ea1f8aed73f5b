//! Cron schedules: a cron expression with seconds, a time zone, a misfire policy and the task
//! each tick submits. Which ticks fire is decided here, from the schedule's next tick and the
//! current time; the store records a firing and advances the schedule in one transaction, so each
//! tick fires once however many server nodes there are and however often they restart.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::protocol::SubmitTask;
use crate::time::Timestamp;
use crate::validate::check_name;
use crate::{Limits, ValidationError};

/// A tick this much late or less is on time; later, it is a misfire.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(5);

/// Most catch-up firings a schedule may ask for after a misfire.
pub const MAX_CATCH_UP: u32 = 100;

/// What to do with ticks missed while no server ran (or the schedule's node was down).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Missed ticks are dropped; the schedule goes on from the next one.
    #[default]
    Skip,
    /// The most recent `catch_up` missed ticks fire at once; older ones are dropped.
    CatchUp,
}

/// A cron schedule as created through the API.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CronSpec {
    #[schema(schema_with = crate::schema::name)]
    pub name: String,
    /// Six fields, seconds first: `sec min hour day-of-month month day-of-week` (a seventh, the
    /// year, is optional). `0 */5 * * * *` is every five minutes.
    pub schedule: String,
    /// An IANA time zone such as `Europe/Berlin`; default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub misfire: Misfire,
    /// With `misfire: catch_up`, how many missed ticks at most fire; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub catch_up: Option<u32>,
    /// The task each tick submits.
    #[serde(deserialize_with = "crate::bounded::object")]
    pub task: SubmitTask,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// Changes to a schedule (`PATCH /v1/cron/{name}`): each field given replaces the stored one;
/// `task` replaces the whole template. The name stays.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CronChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<Misfire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub catch_up: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_object")]
    pub task: Option<SubmitTask>,
}

impl CronChange {
    /// The spec with these changes made.
    pub fn applied_to(self, mut spec: CronSpec) -> CronSpec {
        if let Some(s) = self.schedule {
            spec.schedule = s;
        }
        if let Some(tz) = self.timezone {
            spec.timezone = tz;
        }
        if let Some(m) = self.misfire {
            spec.misfire = m;
            if m == Misfire::Skip {
                spec.catch_up = None;
            }
        }
        if self.catch_up.is_some() {
            spec.catch_up = self.catch_up;
        }
        if let Some(t) = self.task {
            spec.task = t;
        }
        spec
    }
}

/// A stored schedule and where it stands.
///
/// Read through [`CronInfoWire`]: serde cannot read a raw JSON value (the task's payload) from
/// inside a flattened struct, so a schedule with a payload could be written but not read back.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(from = "CronInfoWire")]
pub struct CronInfo {
    #[serde(flatten)]
    pub spec: CronSpec,
    pub paused: bool,
    /// The next tick that has not fired.
    pub next_run_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// [`CronInfo`] as it is read: the same fields, none flattened.
#[derive(Deserialize)]
struct CronInfoWire {
    name: String,
    schedule: String,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default)]
    misfire: Misfire,
    #[serde(default)]
    catch_up: Option<u32>,
    task: SubmitTask,
    paused: bool,
    next_run_at: Timestamp,
    #[serde(default)]
    last_fired_at: Option<Timestamp>,
    created_at: Timestamp,
}

impl From<CronInfoWire> for CronInfo {
    fn from(w: CronInfoWire) -> Self {
        let CronInfoWire {
            name,
            schedule,
            timezone,
            misfire,
            catch_up,
            task,
            paused,
            next_run_at,
            last_fired_at,
            created_at,
        } = w;
        CronInfo {
            spec: CronSpec { name, schedule, timezone, misfire, catch_up, task },
            paused,
            next_run_at,
            last_fired_at,
            created_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CronList {
    pub schedules: Vec<CronInfo>,
}

/// A parsed cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: cron::Schedule,
    tz: chrono_tz::Tz,
}

fn to_datetime(t: Timestamp) -> DateTime<Utc> {
    Utc.timestamp_micros(t.as_micros()).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn from_datetime<Z: TimeZone>(t: DateTime<Z>) -> Timestamp {
    Timestamp::from_micros(t.timestamp_micros())
}

impl Schedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, ValidationError> {
        let fields = expr.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(ValidationError::unprocessable(
                "schedule",
                format!("has {fields} fields; give 6 (sec min hour day month weekday) or 7 (and year)"),
            ));
        }
        let cron = cron::Schedule::from_str(expr).map_err(|e| {
            ValidationError::unprocessable("schedule", format!("{expr:?} is not a cron expression: {e}"))
        })?;
        let tz = timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            ValidationError::unprocessable("timezone", format!("{timezone:?} is not an IANA time zone"))
        })?;
        Ok(Schedule { cron, tz })
    }

    /// The first tick strictly after `t`, if the schedule has one.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let local = to_datetime(t).with_timezone(&self.tz);
        self.cron.after(&local).next().map(from_datetime)
    }

    /// The first tick at or after `t`.
    pub fn first_from(&self, t: Timestamp) -> Option<Timestamp> {
        self.next_after(Timestamp::from_micros(t.as_micros() - 1))
    }
}

/// What a due schedule does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firing {
    /// Ticks to fire, oldest first.
    pub ticks: Vec<Timestamp>,
    /// Missed ticks dropped by the misfire policy.
    pub skipped: u64,
    /// The schedule's next tick after these (`None`: the schedule has no more).
    pub next_run: Option<Timestamp>,
}

/// Past this many ticks behind, a schedule stops counting and jumps to the recent past.
const MAX_SCAN: usize = 100_000;

/// The ticks from `next_run` up to `now`: on-time ones fire; missed ones (later than
/// [`MISFIRE_GRACE`]) are dropped or, under [`Misfire::CatchUp`], the latest `catch_up` of them
/// fire.
pub fn due(schedule: &Schedule, next_run: Timestamp, now: Timestamp, misfire: Misfire, catch_up: u32) -> Firing {
    let mut missed: std::collections::VecDeque<Timestamp> = std::collections::VecDeque::new();
    let mut on_time = Vec::new();
    let mut skipped = 0u64;
    let keep = match misfire {
        Misfire::Skip => 0,
        Misfire::CatchUp => catch_up as usize,
    };
    let late = now.saturating_sub(MISFIRE_GRACE);
    let mut tick = Some(next_run);
    let mut scanned = 0;
    while let Some(t) = tick.filter(|t| *t <= now) {
        scanned += 1;
        if scanned > MAX_SCAN {
            // Far behind: count the rest as skipped in bulk and restart a grace before now.
            skipped += 1;
            tick = schedule.first_from(late);
            scanned = 0;
            continue;
        }
        if t < late {
            missed.push_back(t);
            if missed.len() > keep {
                missed.pop_front();
                skipped += 1;
            }
        } else {
            on_time.push(t);
        }
        tick = schedule.next_after(t);
    }
    let mut ticks: Vec<Timestamp> = missed.into_iter().collect();
    ticks.extend(on_time);
    Firing { ticks, skipped, next_run: tick }
}

impl CronSpec {
    /// Checks the spec and parses its schedule.
    pub fn validate(&self, limits: &Limits, now: Timestamp) -> Result<Schedule, ValidationError> {
        check_name("name", &self.name, limits)?;
        let schedule = Schedule::parse(&self.schedule, &self.timezone)?;
        if self.catch_up.is_some_and(|n| n == 0 || n > MAX_CATCH_UP) {
            return Err(ValidationError::new("catch_up", format!("must be between 1 and {MAX_CATCH_UP}")));
        }
        if self.catch_up.is_some() && self.misfire != Misfire::CatchUp {
            return Err(ValidationError::unprocessable("catch_up", "only goes with misfire: catch_up"));
        }
        if self.task.run_at.is_some() || self.task.delay_ms.is_some() || self.task.idempotency_key.is_some() {
            return Err(ValidationError::unprocessable(
                "task",
                "run_at, delay_ms and idempotency_key are set by the schedule, not the template",
            ));
        }
        if self.task.expires_at.is_some() {
            return Err(ValidationError::unprocessable(
                "task.expires_at",
                "a schedule's tasks expire relative to each tick: give expires_in_ms",
            ));
        }
        self.task.clone().validate(limits, now).map_err(|e| e.within("task"))?;
        if schedule.next_after(now).is_none() {
            return Err(ValidationError::unprocessable("schedule", "has no tick in the future"));
        }
        Ok(schedule)
    }

    /// How many missed ticks may fire late.
    pub fn catch_up_limit(&self) -> u32 {
        match self.misfire {
            Misfire::Skip => 0,
            Misfire::CatchUp => self.catch_up.unwrap_or(1),
        }
    }

    /// The idempotency key of the task a tick submits: one task per schedule and tick.
    pub fn tick_key(&self, tick: Timestamp) -> String {
        format!("cron/{}/{}", self.name, tick.as_micros())
    }
}

#[cfg(test)]
mod tests;
