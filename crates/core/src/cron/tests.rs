use super::*;

fn utc(s: &str) -> Timestamp {
    from_datetime(DateTime::parse_from_rfc3339(s).unwrap())
}

#[test]
fn schedules_have_seconds_and_time_zones() {
    let every_5s = Schedule::parse("*/5 * * * * *", "UTC").unwrap();
    assert_eq!(every_5s.next_after(utc("2026-01-01T00:00:01Z")), Some(utc("2026-01-01T00:00:05Z")));
    assert_eq!(every_5s.first_from(utc("2026-01-01T00:00:05Z")), Some(utc("2026-01-01T00:00:05Z")));
    // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    let nine = Schedule::parse("0 0 9 * * *", "Europe/Berlin").unwrap();
    assert_eq!(nine.next_after(utc("2026-01-10T00:00:00Z")), Some(utc("2026-01-10T08:00:00Z")));
    assert_eq!(nine.next_after(utc("2026-07-10T00:00:00Z")), Some(utc("2026-07-10T07:00:00Z")));
}

#[test]
fn bad_schedules_name_the_field() {
    assert_eq!(Schedule::parse("* * * * *", "UTC").unwrap_err().field, "schedule");
    assert_eq!(Schedule::parse("0 0 99 * * *", "UTC").unwrap_err().field, "schedule");
    assert_eq!(Schedule::parse("0 * * * * *", "Mars/Olympus").unwrap_err().field, "timezone");
}

#[test]
fn on_time_ticks_fire_and_missed_ones_follow_the_policy() {
    let s = Schedule::parse("* * * * * *", "UTC").unwrap();
    let start = utc("2026-01-01T00:00:00Z");
    // One second late: on time.
    let f = due(&s, start, utc("2026-01-01T00:00:01Z"), Misfire::Skip, 0);
    assert_eq!(f.ticks, vec![start, utc("2026-01-01T00:00:01Z")]);
    assert_eq!(f.next_run, Some(utc("2026-01-01T00:00:02Z")));
    // Down for a minute: skip drops the missed ticks, keeps the ones within the grace.
    let now = utc("2026-01-01T00:01:00Z");
    let f = due(&s, start, now, Misfire::Skip, 0);
    assert_eq!(f.ticks.len(), 6, "ticks 55..=60 are within the grace");
    assert_eq!(f.skipped, 55);
    assert_eq!(f.next_run, Some(utc("2026-01-01T00:01:01Z")));
    // Catch up 3: the three latest missed ticks fire too.
    let f = due(&s, start, now, Misfire::CatchUp, 3);
    assert_eq!(f.ticks.len(), 9);
    assert_eq!(f.ticks[0], utc("2026-01-01T00:00:52Z"));
    assert_eq!(f.skipped, 52);
    // Not yet due: nothing.
    let f = due(&s, now, start, Misfire::Skip, 0);
    assert!(f.ticks.is_empty());
    assert_eq!(f.next_run, Some(now));
}

#[test]
fn a_schedule_years_behind_does_not_count_every_tick() {
    let s = Schedule::parse("* * * * * *", "UTC").unwrap();
    let f = due(&s, utc("2020-01-01T00:00:00Z"), utc("2026-01-01T00:00:00Z"), Misfire::CatchUp, 2);
    assert!(f.ticks.len() <= 8, "{:?}", f.ticks);
    assert_eq!(f.next_run, Some(utc("2026-01-01T00:00:01Z")));
}

/// Regression: a schedule whose task has a payload was written but could not be read back (the
/// payload sat inside a flattened struct), so `cron ls` failed until the schedule was removed.
#[test]
fn a_schedule_with_a_payload_reads_back() {
    let spec: CronSpec = serde_json::from_str(
        r#"{"name":"daily","schedule":"0 0 3 * * *","task":{"queue":"q","kind":"k","payload":{"report":"daily"}}}"#,
    )
    .unwrap();
    let info = CronInfo {
        spec,
        paused: false,
        next_run_at: Timestamp::from_millis(1_000),
        last_fired_at: Some(Timestamp::from_millis(500)),
        created_at: Timestamp::from_millis(100),
    };
    let json = serde_json::to_string(&info).unwrap();
    let back: CronInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(back.spec.task.payload.unwrap().get(), r#"{"report":"daily"}"#);
    assert_eq!(back.spec.name, "daily");
    assert_eq!(back.last_fired_at, Some(Timestamp::from_millis(500)));
    let list: CronList = serde_json::from_str(&format!(r#"{{"schedules":[{json}]}}"#)).unwrap();
    assert_eq!(list.schedules.len(), 1);
}
