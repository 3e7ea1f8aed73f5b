//! The client commands: submit, task get|list|cancel|retry|wait, workers.

use anyhow::{Context, bail};
use serde_json::value::RawValue;
use taskwarden_client::{Client, ListOptions, SubmitTask, Task, TaskId, TaskState};

use crate::args::{QueueArgs, QueueCommand, SubmitArgs, TaskArgs, TaskCommand, WorkersArgs};

fn parse_id(id: &str) -> anyhow::Result<TaskId> {
    id.parse().with_context(|| format!("{id:?} is not a task id"))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_task(task: &Task) {
    println!("id:        {}", task.id);
    println!("queue:     {}", task.queue);
    println!("kind:      {}", task.kind);
    println!("state:     {}", task.state);
    println!("priority:  {}", task.priority);
    println!("attempts:  {} of {}", task.attempts, task.attempt_limit);
    println!("created:   {}", task.created_at);
    println!("run at:    {}", task.run_at);
    if let Some(f) = task.finished_at {
        println!("finished:  {f}");
    }
    if let Some(l) = &task.lease {
        println!("lease:     worker {} until {}", l.worker_id, l.expires_at);
    }
    if let Some(p) = &task.progress {
        println!("progress:  {:.0}% {}", p.fraction * 100.0, p.message.as_deref().unwrap_or(""));
    }
    println!("payload:   {}", task.payload.get());
    if let Some(r) = &task.result {
        println!("result:    {}", r.get());
    }
    if let Some(e) = &task.error {
        println!("error:     {e}");
    }
    for a in &task.history {
        let ms = a.run_time().as_secs_f64() * 1000.0;
        println!(
            "attempt {}: {} on {} after {ms:.1} ms{}",
            a.number,
            a.outcome.as_str(),
            a.worker_id,
            a.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
}

fn show(task: &Task, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(task)
    } else {
        print_task(task);
        Ok(())
    }
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.connect.url)?;
    let payload = RawValue::from_string(a.payload.clone())
        .with_context(|| format!("--payload is not valid JSON: {}", a.payload))?;
    let req = SubmitTask {
        queue: a.queue,
        kind: a.kind,
        payload: Some(payload),
        priority: a.priority,
        delay_ms: a.delay.map(|d| d.as_millis() as u64),
        max_attempts: a.max_attempts,
        timeout_ms: a.timeout.map(|d| d.as_millis() as u64),
        idempotency_key: a.idempotency_key,
        tags: if a.tag.is_empty() { None } else { Some(a.tag) },
        ..Default::default()
    };
    let mut task = client.submit(req).await?;
    if a.wait {
        task = client.wait(task.id, a.wait_timeout).await?;
    }
    if a.json {
        print_json(&task)?;
    } else {
        println!("{}", task.id);
    }
    if a.wait && task.state != TaskState::Succeeded {
        bail!("task {} ended {}{}", task.id, task.state, task.error.map(|e| format!(": {e}")).unwrap_or_default());
    }
    Ok(())
}

pub async fn task(a: TaskArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.connect.url)?;
    match a.command {
        TaskCommand::Get { id, json } => show(&client.get(parse_id(&id)?).await?, json),
        TaskCommand::List { queue, state, kind, tag, limit, cursor, json } => {
            let state =
                state.map(|s| s.parse::<TaskState>()).transpose().map_err(|e| anyhow::anyhow!("--state: {e}"))?;
            let page = client.list(&ListOptions { queue, state, kind, tag, cursor, limit: Some(limit) }).await?;
            if json {
                return print_json(&page);
            }
            println!("{:<36}  {:<10}  {:<16}  {:<16}  {:>8}", "ID", "STATE", "QUEUE", "KIND", "ATTEMPTS");
            for t in &page.tasks {
                println!("{:<36}  {:<10}  {:<16}  {:<16}  {:>8}", t.id, t.state, t.queue, t.kind, t.attempts);
            }
            if let Some(c) = page.next_cursor {
                println!("next page: --cursor {c}");
            }
            Ok(())
        }
        TaskCommand::Cancel { id, json } => show(&client.cancel(parse_id(&id)?).await?, json),
        TaskCommand::Retry { id, json } => show(&client.retry(parse_id(&id)?).await?, json),
        TaskCommand::Wait { id, timeout, json } => {
            let task = client.wait(parse_id(&id)?, timeout).await?;
            show(&task, json)?;
            if task.state != TaskState::Succeeded {
                bail!("task {} ended {}", task.id, task.state);
            }
            Ok(())
        }
    }
}

pub async fn workers(a: WorkersArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.connect.url)?;
    let workers = client.workers().await?;
    if a.json {
        return print_json(&workers);
    }
    println!("{:<20}  {:<24}  {:>7}  {:>11}  {:<28}  QUEUES", "ID", "NAME", "RUNNING", "CONCURRENCY", "LAST SEEN");
    for w in workers {
        println!(
            "{:<20}  {:<24}  {:>7}  {:>11}  {:<28}  {}",
            w.id,
            w.name,
            w.running,
            w.concurrency,
            w.last_seen_at.to_string(),
            w.queues.join(",")
        );
    }
    Ok(())
}

pub async fn queue(a: QueueArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.connect.url)?;
    let queues = match a.command {
        QueueCommand::Ls { json } => {
            let queues = client.queues().await?;
            if json {
                return print_json(&queues);
            }
            queues
        }
        QueueCommand::Pause { queue } => vec![client.pause_queue(&queue).await?],
        QueueCommand::Resume { queue } => vec![client.resume_queue(&queue).await?],
        QueueCommand::Set { queue, weight } => vec![client.set_queue_weight(&queue, weight).await?],
    };
    println!(
        "{:<24}  {:>8}  {:>9}  {:>7}  {:>6}  {:>6}  {:>6}  {:>13}  {:>11}",
        "QUEUE", "READY", "SCHEDULED", "RUNNING", "FAILED", "WEIGHT", "PAUSED", "OLDEST READY", "DONE/MINUTE"
    );
    for q in queues {
        let oldest = q.oldest_ready_ms.map(|ms| format!("{:.1}s", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into());
        println!(
            "{:<24}  {:>8}  {:>9}  {:>7}  {:>6}  {:>6}  {:>6}  {:>13}  {:>11}",
            q.name,
            q.ready,
            q.scheduled,
            q.running,
            q.failed,
            q.weight,
            if q.paused { "yes" } else { "no" },
            oldest,
            q.succeeded_last_minute
        );
    }
    Ok(())
}
