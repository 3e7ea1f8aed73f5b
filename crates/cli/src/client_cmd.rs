//! The client commands: submit, task get|list|cancel|retry|wait, workers.

use anyhow::Context;
use serde_json::value::RawValue;
use taskwarden_client::{Client, ListOptions, SubmitTask, Task, TaskId, TaskState};

use taskwarden_core::cron::{CronChange, CronSpec, Misfire};
use taskwarden_core::placement::{Resources, parse_labels};
use taskwarden_core::protocol::{BulkFilter, BulkResult, QueueUpdate, WorkerStatus};

use crate::args::{
    BulkFilterArgs, CronArgs, CronCommand, Expires, KindsArgs, KindsCommand, QueueArgs, QueueCommand, SubmitArgs,
    TaskArgs, TaskCommand, TaskOptions, WorkersArgs,
};
use crate::exit::{Unsuccessful, out, usage};

/// A client for the server the flags name, with their token and TLS settings.
pub fn connect(c: &crate::args::ConnectArgs) -> anyhow::Result<Client> {
    Ok(Client::with_options(&c.url, client_options(c)?)?)
}

pub fn client_options(c: &crate::args::ConnectArgs) -> anyhow::Result<taskwarden_client::ClientOptions> {
    let read = |p: &std::path::PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let identity_pem = match (&c.client_cert, &c.client_key) {
        (Some(cert), Some(key)) => Some([read(cert)?, b"\n".to_vec(), read(key)?].concat()),
        _ => None,
    };
    Ok(taskwarden_client::ClientOptions {
        token: c.token.clone(),
        ca_cert_pem: c.ca_cert.as_ref().map(read).transpose()?,
        identity_pem,
    })
}

pub(crate) fn parse_id(id: &str) -> anyhow::Result<TaskId> {
    match id.parse() {
        Ok(id) => Ok(id),
        Err(_) => usage!("{id:?} is not a task id"),
    }
}

/// A `--payload` value: JSON as given, `@FILE` for a file's contents, or `-` for standard input
/// (payloads too large for a command line).
pub fn read_payload(flag: &str, value: &str) -> anyhow::Result<Box<RawValue>> {
    use std::io::Read;
    let (text, from) = match value {
        "-" => {
            let mut text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut text) {
                usage!("{flag} -: reading standard input: {e}");
            }
            (text, "standard input".to_owned())
        }
        v if v.starts_with('@') => match std::fs::read_to_string(&v[1..]) {
            Ok(text) => (text, v[1..].to_owned()),
            Err(e) => usage!("{flag} {v}: reading {}: {e}", &v[1..]),
        },
        v => (v.to_owned(), String::new()),
    };
    match RawValue::from_string(text.trim().to_owned()) {
        Ok(raw) => Ok(raw),
        Err(e) if from.is_empty() => usage!("{flag} is not valid JSON ({e}): {value}"),
        Err(e) => usage!("{flag}: {from} is not valid JSON: {e}"),
    }
}

/// Resources or labels from a flag, a bad one being a usage error.
fn flag_value<T, E: std::fmt::Display>(parsed: Result<T, E>) -> anyhow::Result<T> {
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => usage!("{e}"),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_task(task: &Task) {
    out!("id:        {}", task.id);
    out!("queue:     {}", task.queue);
    out!("kind:      {}", task.kind);
    out!("state:     {}", task.state);
    out!("priority:  {}", task.priority);
    if !task.tags.is_empty() {
        out!("tags:      {}", task.tags.join(","));
    }
    if let Some(key) = &task.idempotency_key {
        out!("idempotency key: {key}");
    }
    out!("attempts:  {}", attempts(task));
    out!("created:   {}", task.created_at);
    out!("run at:    {}", task.run_at);
    if let Some(e) = task.expires_at {
        out!("expires:   {e} (if not started by then)");
    }
    if let Some(f) = task.finished_at {
        out!("finished:  {f}");
    }
    if let Some(l) = &task.lease {
        out!("lease:     worker {} until {}", l.worker_id, l.expires_at);
    }
    if let Some(p) = &task.progress {
        out!("progress:  {:.0}% {}", p.fraction * 100.0, p.message.as_deref().unwrap_or(""));
    }
    if !task.needs.is_empty() {
        out!("needs:     {}", serde_json::to_string(&task.needs).expect("plain data serializes"));
    }
    if let Some(why) = &task.unschedulable {
        out!("unschedulable: {why}");
    }
    out!("payload:   {}", task.payload.get());
    if let Some(r) = &task.result {
        out!("result:    {}", r.get());
    }
    if let Some(e) = &task.error {
        out!("error:     {e}");
    }
    for a in &task.history {
        let ms = a.run_time().as_secs_f64() * 1000.0;
        out!(
            "attempt {}: {} on {} after {ms:.1} ms{}",
            a.number,
            a.outcome.as_str(),
            a.worker_id,
            a.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
}

/// Attempts made and how many more the task may have. Not "3 of 6": a manual retry and a lease
/// given back (a worker shutting down) move the limit on, so that count read as if the policy
/// allowed six.
fn attempts(task: &Task) -> String {
    let left = task.attempt_limit.saturating_sub(task.attempts);
    match task.state.is_terminal() {
        true => format!("{} made (max_attempts {})", task.attempts, task.max_attempts),
        false => format!("{} made, {left} more allowed (max_attempts {})", task.attempts, task.max_attempts),
    }
}

pub(crate) fn show(task: &Task, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(task)
    } else {
        print_task(task);
        Ok(())
    }
}

/// The task a `submit` or a cron schedule's ticks send, from the flags they share.
fn task_request(t: TaskOptions) -> anyhow::Result<SubmitTask> {
    Ok(SubmitTask {
        payload: Some(read_payload("--payload", &t.payload)?),
        priority: t.priority,
        max_attempts: t.max_attempts,
        timeout_ms: t.timeout.map(|d| d.as_millis() as u64),
        lease_timeout_ms: t.lease_timeout.map(|d| d.as_millis() as u64),
        backoff: t.backoff,
        tags: if t.tag.is_empty() { None } else { Some(t.tag) },
        resources: Some(flag_value(Resources::parse("--resources", &t.resources))?).filter(|r| !r.is_empty()),
        labels: Some(flag_value(parse_labels("--labels", &t.labels))?).filter(|l| !l.is_empty()),
        concurrency_key: t.concurrency_key,
        rate_key: t.rate_key,
        expires_in_ms: match t.expires {
            Some(Expires::In(d)) => Some(d.as_millis() as u64),
            _ => None,
        },
        expires_at: match t.expires {
            Some(Expires::At(at)) => Some(at),
            _ => None,
        },
        queue: t.queue,
        kind: t.kind,
        ..Default::default()
    })
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let client = connect(&a.connect)?;
    let req = SubmitTask {
        delay_ms: a.delay.map(|d| d.as_millis() as u64),
        run_at: a.run_at,
        idempotency_key: a.idempotency_key,
        ..task_request(a.task)?
    };
    let mut task = client.submit(req).await?;
    if a.wait {
        match client.wait_outcome(task.id, a.wait_timeout).await {
            Ok(done) => task = done,
            Err(e) => {
                // The task exists whatever happened to the wait: a script still gets its id.
                print_submitted(&task, a.json)?;
                return Err(e.into());
            }
        }
    }
    print_submitted(&task, a.json)?;
    if a.wait { succeeded(&task) } else { Ok(()) }
}

/// What a queue or cron command answers with: every one listed, or the one it changed.
enum Answer<T> {
    List(Vec<T>),
    One(T),
}

impl<T: serde::Serialize> Answer<T> {
    /// Prints it as JSON when asked (a list as an array, a change as the object); otherwise
    /// hands back the rows for the table.
    fn json_or_rows(self, json: bool) -> anyhow::Result<Option<Vec<T>>> {
        match (self, json) {
            (Answer::List(all), true) => print_json(&all).map(|()| None),
            (Answer::One(one), true) => print_json(&one).map(|()| None),
            (Answer::List(all), false) => Ok(Some(all)),
            (Answer::One(one), false) => Ok(Some(vec![one])),
        }
    }
}

/// A removal: `removed NAME`, or `{"removed": "NAME"}` with --json.
fn done(json: bool, what: &str, name: &str) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({ what: name }));
    }
    out!("{what} {name}");
    Ok(())
}

fn print_submitted(task: &Task, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(task)
    } else {
        out!("{}", task.id);
        Ok(())
    }
}

/// Exit 1 unless the task succeeded.
pub(crate) fn succeeded(task: &Task) -> anyhow::Result<()> {
    if task.state == TaskState::Succeeded {
        return Ok(());
    }
    let error = task.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
    Err(Unsuccessful(format!("task {} ended {}{error}", task.id, task.state)).into())
}

pub async fn task(a: TaskArgs) -> anyhow::Result<()> {
    let client = connect(&a.connect)?;
    match a.command {
        TaskCommand::Get { id, json } => show(&client.get(parse_id(&id)?).await?, json),
        TaskCommand::List { queue, state, kind, tag, q, limit, cursor, json } => {
            let state = match state.map(|s| s.parse::<TaskState>()).transpose() {
                Ok(state) => state,
                Err(e) => usage!("--state: {e}"),
            };
            let page = client.list(&ListOptions { queue, state, kind, tag, q, cursor, limit: Some(limit) }).await?;
            if json {
                return print_json(&page);
            }
            // Running tasks also show where they run, since when, and how far they got.
            let running = page.tasks.iter().any(|t| t.lease.is_some());
            let head = format!("{:<36}  {:<10}  {:<16}  {:<16}  {:>8}", "ID", "STATE", "QUEUE", "KIND", "ATTEMPTS");
            match running {
                true => out!("{head}  {:<20}  {:<27}  PROGRESS", "WORKER", "STARTED"),
                false => out!("{head}"),
            }
            for t in &page.tasks {
                let row = format!("{:<36}  {:<10}  {:<16}  {:<16}  {:>8}", t.id, t.state, t.queue, t.kind, t.attempts);
                match (&t.lease, running) {
                    (Some(l), _) => {
                        let progress = t.progress.as_ref().map(|p| format!("{:.0}%", p.fraction * 100.0));
                        out!(
                            "{row}  {:<20}  {:<27}  {}",
                            l.worker_id,
                            l.started_at.to_string(),
                            progress.as_deref().unwrap_or("-")
                        )
                    }
                    (None, true) => out!("{row}  {:<20}  {:<27}  -", "-", "-"),
                    (None, false) => out!("{row}"),
                }
            }
            if let Some(c) = page.next_cursor {
                out!("next page: --cursor {c}");
            }
            Ok(())
        }
        TaskCommand::Cancel { id: Some(id), filter, json } if filter.is_empty() => {
            show(&client.cancel(parse_id(&id)?).await?, json)
        }
        TaskCommand::Retry { id: Some(id), filter, json } if filter.is_empty() => {
            show(&client.retry(parse_id(&id)?).await?, json)
        }
        TaskCommand::Cancel { id: None, filter, json } => bulk(&client, filter, json, false).await,
        TaskCommand::Retry { id: None, filter, json } => bulk(&client, filter, json, true).await,
        TaskCommand::Cancel { .. } | TaskCommand::Retry { .. } => {
            usage!("give a task id, or filters (--queue, --state, --kind, --tag) for a bulk change, not both")
        }
        TaskCommand::Wait { id, timeout, json } => {
            let task = client.wait_outcome(parse_id(&id)?, timeout).await?;
            show(&task, json)?;
            succeeded(&task)
        }
        TaskCommand::Watch { id, json } => crate::events_cmd::watch_task(&client, parse_id(&id)?, json).await,
        TaskCommand::Logs { id, follow, json } => task_logs(&client, parse_id(&id)?, follow, json).await,
    }
}

/// `task logs`: every line so far, and with `follow` the lines to come until the task finishes.
async fn task_logs(client: &Client, id: TaskId, follow: bool, json: bool) -> anyhow::Result<()> {
    let wait = if follow { std::time::Duration::from_secs(30) } else { std::time::Duration::ZERO };
    let mut after = 0;
    loop {
        let page = client.task_logs(id, after, wait).await?;
        for l in &page.lines {
            match json {
                true => out!("{}", serde_json::to_string(l)?),
                false => out!("{}  attempt {}  {}", l.at, l.attempt, l.line),
            }
        }
        after = page.next;
        // Done when nothing more can come (finished, all read), or, without --follow, at the end.
        if (page.lines.is_empty() && (page.finished || !follow)) || (!follow && page.lines.len() < 500) {
            return Ok(());
        }
    }
}

/// `task retry|cancel` with filters: the server changes every matching task, a page at a time.
async fn bulk(client: &Client, f: BulkFilterArgs, json: bool, retry: bool) -> anyhow::Result<()> {
    if f.is_empty() {
        usage!("give a task id, or at least one filter (--queue, --state, --kind, --tag, --query) for a bulk change");
    }
    let state = match f.state.map(|s| s.parse::<TaskState>()).transpose() {
        Ok(state) => state,
        Err(e) => usage!("--state: {e}"),
    };
    let filter =
        BulkFilter { queue: f.queue, state, kind: f.kind, tag: f.tag, q: f.q, limit: f.limit, cursor: f.cursor };
    let (result, done) = match retry {
        true => (client.retry_matching(&filter).await?, "retried"),
        false => (client.cancel_matching(&filter).await?, "cancelled"),
    };
    if json {
        return print_json(&result);
    }
    out!("{done} {} of {} matching tasks ({} had moved on)", result.changed, result.matched, result.skipped);
    if let Some(c) = result.next_cursor {
        out!("more may match: repeat with --cursor {c}");
    }
    Ok(())
}

/// `queue purge`: bulk cancels of the queue's ready (and scheduled) tasks, following the cursor
/// until nothing is left; the counts added up.
async fn purge(client: &Client, queue: String, scheduled: bool, yes: bool, json: bool) -> anyhow::Result<()> {
    if !yes {
        usage!("queue purge cancels every ready task in {queue:?}; add --yes to do it");
    }
    let states: &[TaskState] = if scheduled { &[TaskState::Ready, TaskState::Scheduled] } else { &[TaskState::Ready] };
    let mut total = BulkResult::default();
    for &state in states {
        let mut cursor = None;
        loop {
            let filter = BulkFilter { queue: Some(queue.clone()), state: Some(state), cursor, ..BulkFilter::default() };
            let r = client.cancel_matching(&filter).await?;
            (total.matched, total.changed, total.skipped) =
                (total.matched + r.matched, total.changed + r.changed, total.skipped + r.skipped);
            cursor = r.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    if json {
        return print_json(&total);
    }
    out!("cancelled {} tasks in {queue} ({} had moved on)", total.changed, total.skipped);
    Ok(())
}

pub async fn kinds(a: KindsArgs) -> anyhow::Result<()> {
    let client = connect(&a.connect)?;
    let KindsCommand::Ls { json } = a.command;
    let kinds = client.kinds().await?;
    if json {
        return print_json(&kinds);
    }
    out!("{:<32}  {:>7}  {:>7}  {:<6}  QUEUES", "KIND", "WORKERS", "READY", "SCHEMA");
    for k in &kinds {
        let schema = if k.schema.is_some() { "yes" } else { "-" };
        out!("{:<32}  {:>7}  {:>7}  {:<6}  {}", k.kind, k.workers, k.ready, schema, k.queues.join(","));
    }
    let live = client.workers().await?.into_iter().filter(|w| w.status == WorkerStatus::Live);
    let any = live.filter(|w| w.kinds.is_empty()).count();
    if any > 0 {
        out!("({any} live worker(s) did not say which kinds they run: they take any kind)");
    }
    Ok(())
}

pub async fn workers(a: WorkersArgs) -> anyhow::Result<()> {
    let client = connect(&a.connect)?;
    let workers = client.workers().await?;
    if a.json {
        return print_json(&workers);
    }
    out!(
        "{:<20}  {:<24}  {:<6}  {:>7}  {:>11}  {:<28}  QUEUES",
        "ID",
        "NAME",
        "STATUS",
        "RUNNING",
        "CONCURRENCY",
        "LAST SEEN"
    );
    for w in workers {
        out!(
            "{:<20}  {:<24}  {:<6}  {:>7}  {:>11}  {:<28}  {}",
            w.id,
            w.name,
            w.status.as_str(),
            w.running,
            w.concurrency,
            w.last_seen_at.to_string(),
            w.queues.join(",")
        );
    }
    Ok(())
}

pub async fn queue(a: QueueArgs) -> anyhow::Result<()> {
    let client = connect(&a.connect)?;
    let (answer, json) = match a.command {
        QueueCommand::Ls { json } => (Answer::List(client.queues().await?), json),
        QueueCommand::Pause { queue, create, json } => (Answer::One(client.pause_queue(&queue, create).await?), json),
        QueueCommand::Resume { queue, json } => (Answer::One(client.resume_queue(&queue, false).await?), json),
        QueueCommand::Rm { queue, json } => {
            client.remove_queue(&queue).await?;
            return done(json, "removed", &queue);
        }
        QueueCommand::Purge { queue, scheduled, yes, json } => {
            return purge(&client, queue, scheduled, yes, json).await;
        }
        QueueCommand::Set { queue, weight, concurrency, key_concurrency, rate, key_rate, create, json } => {
            let changes_limits = [&concurrency, &key_concurrency, &rate, &key_rate].iter().any(|o| o.is_some());
            let limits = if changes_limits {
                let current = client.queues().await?.into_iter().find(|q| q.name == queue);
                let mut l = current.map(|q| q.limits).unwrap_or_default();
                set_limit(&mut l.concurrency, concurrency, "--concurrency")?;
                set_limit(&mut l.key_concurrency, key_concurrency, "--key-concurrency")?;
                set_limit(&mut l.rate, rate, "--rate")?;
                set_limit(&mut l.key_rate, key_rate, "--key-rate")?;
                Some(l)
            } else {
                None
            };
            if weight.is_none() && limits.is_none() {
                usage!("give --weight, --concurrency, --key-concurrency, --rate or --key-rate");
            }
            (Answer::One(client.update_queue(&queue, &QueueUpdate { weight, limits }, create).await?), json)
        }
    };
    let Some(queues) = answer.json_or_rows(json)? else { return Ok(()) };
    out!(
        "{:<24}  {:>8}  {:>9}  {:>7}  {:>6}  {:>6}  {:>6}  {:>13}  {:>11}  {:>13}  LIMITS",
        "QUEUE",
        "READY",
        "SCHEDULED",
        "RUNNING",
        "FAILED",
        "WEIGHT",
        "PAUSED",
        "OLDEST READY",
        "DONE/MINUTE",
        "UNSCHEDULABLE"
    );
    for q in queues {
        let oldest = q.oldest_ready_ms.map(|ms| format!("{:.1}s", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into());
        out!(
            "{:<24}  {:>8}  {:>9}  {:>7}  {:>6}  {:>6}  {:>6}  {:>13}  {:>11}  {:>13}  {}",
            q.name,
            q.ready,
            q.scheduled,
            q.running,
            q.failed,
            q.weight,
            if q.paused { "yes" } else { "no" },
            oldest,
            q.succeeded_last_minute,
            q.unschedulable,
            q.limits.describe()
        );
    }
    Ok(())
}

/// Sets one limit from a flag's value: a number or rate, or `none` to remove it.
fn set_limit<T: std::str::FromStr>(slot: &mut Option<T>, flag: Option<String>, name: &str) -> anyhow::Result<()>
where
    T::Err: std::fmt::Display,
{
    if let Some(v) = flag {
        *slot = match v.as_str() {
            "none" => None,
            v => match v.parse() {
                Ok(v) => Some(v),
                Err(e) => usage!("{name}: {e}"),
            },
        };
    }
    Ok(())
}

/// `--misfire skip` or `--misfire catch-up=N`.
fn parse_misfire(m: &str) -> anyhow::Result<(Misfire, Option<u32>)> {
    match m {
        "skip" => Ok((Misfire::Skip, None)),
        m => match m.strip_prefix("catch-up=").and_then(|n| n.parse().ok()) {
            Some(n) => Ok((Misfire::CatchUp, Some(n))),
            None => usage!("--misfire: give skip or catch-up=N, not {m:?}"),
        },
    }
}

pub async fn cron(a: CronArgs) -> anyhow::Result<()> {
    let client = connect(&a.connect)?;
    let (answer, json) = match a.command {
        CronCommand::Add { name, schedule, timezone, misfire, task, json } => {
            let (misfire, catch_up) = parse_misfire(&misfire)?;
            let task = task_request(*task)?;
            let spec = CronSpec { name, schedule, timezone, misfire, catch_up, task };
            (Answer::One(client.create_cron(&spec).await?), json)
        }
        CronCommand::Ls { json } => (Answer::List(client.crons().await?), json),
        CronCommand::Pause { name, json } => (Answer::One(client.pause_cron(&name, true).await?), json),
        CronCommand::Resume { name, json } => (Answer::One(client.pause_cron(&name, false).await?), json),
        CronCommand::Update { name, schedule, timezone, misfire, payload, priority, max_attempts, timeout, json } => {
            let (misfire, catch_up) = match misfire.as_deref().map(parse_misfire).transpose()? {
                Some((m, c)) => (Some(m), c),
                None => (None, None),
            };
            let payload = payload.map(|p| read_payload("--payload", &p)).transpose()?;
            let task_changes = payload.is_some() || priority.is_some() || max_attempts.is_some() || timeout.is_some();
            let task = match task_changes {
                false => None,
                // The template as stored, with the flags' changes; for a schedule that does not
                // exist none is sent, and the server says so.
                true => client.crons().await?.into_iter().find(|c| c.spec.name == name).map(|current| {
                    let mut t = current.spec.task;
                    t.payload = payload.or(t.payload);
                    t.priority = priority.or(t.priority);
                    t.max_attempts = max_attempts.or(t.max_attempts);
                    t.timeout_ms = timeout.map(|d| d.as_millis() as u64).or(t.timeout_ms);
                    t
                }),
            };
            let change = CronChange { schedule, timezone, misfire, catch_up, task };
            (Answer::One(client.update_cron(&name, &change).await?), json)
        }
        CronCommand::Run { name, json } => {
            let task = client.run_cron(&name).await?;
            return print_submitted(&task, json);
        }
        CronCommand::Rm { name, json } => {
            client.delete_cron(&name).await?;
            return done(json, "deleted", &name);
        }
    };
    let Some(schedules) = answer.json_or_rows(json)? else { return Ok(()) };
    out!(
        "{:<24}  {:<20}  {:<16}  {:<6}  {:<30}  {:<30}  {:<16}  TASK",
        "NAME",
        "SCHEDULE",
        "TIME ZONE",
        "PAUSED",
        "LAST",
        "NEXT",
        "MISFIRE"
    );
    for c in schedules {
        let misfire = match c.spec.misfire {
            Misfire::Skip => "skip".to_owned(),
            Misfire::CatchUp => format!("catch-up={}", c.spec.catch_up_limit()),
        };
        out!(
            "{:<24}  {:<20}  {:<16}  {:<6}  {:<30}  {:<30}  {:<16}  {}/{}",
            c.spec.name,
            c.spec.schedule,
            c.spec.timezone,
            if c.paused { "yes" } else { "no" },
            c.last_fired_at.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            c.next_run_at.to_string(),
            misfire,
            c.spec.task.queue,
            c.spec.task.kind
        );
    }
    Ok(())
}
