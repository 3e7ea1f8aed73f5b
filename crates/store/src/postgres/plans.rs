//! The queries whose plans must not change with the statistics, for the test that runs
//! `EXPLAIN` on them at the worst moments (`tests/postgres_plans.rs`).

/// Each query on the fetch path, with the index it must use (`$1` a queue, `$2` a limit).
pub const FETCH: &[(&str, &str, &str)] = &[
    ("best ready tasks", super::ops::BEST, "tasks_ready"),
    ("longest-waiting ready tasks", super::ops::OLDEST, "tasks_ready_by_age"),
];
