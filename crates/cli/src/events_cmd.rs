//! `events`, `task watch` and `workflow watch`: the event log, read or followed live.

use taskwarden_client::{Client, Event, EventOptions, EventStream, EventType, TaskId, TaskState, WorkflowState};

use crate::args::{EventsArgs, WebhookArgs, WebhookCommand};
use crate::client_cmd::{connect, parse_id};
use crate::exit::out;

pub async fn run(a: EventsArgs) -> anyhow::Result<()> {
    let client = connect(&a.connect)?;
    let id = |flag: &str, v: Option<String>| -> anyhow::Result<Option<TaskId>> {
        v.map(|v| parse_id(&v).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))).transpose()
    };
    let mut options = EventOptions {
        after: a.after,
        queue: a.queue,
        kind: a.kind,
        task: id("task", a.task)?,
        workflow: id("workflow", a.workflow)?,
        tag: a.tag,
        types: a.types,
        limit: None,
    };
    if !a.follow {
        options.limit = Some(a.limit);
        let page = client.events(&options).await?;
        for e in &page.events {
            print_event(e, a.json)?;
        }
        if !a.json && page.events.len() == a.limit as usize {
            out!("more may follow: repeat with --after {}", page.next);
        }
        return Ok(());
    }
    options.after = options.after.or(Some("now".into()));
    let mut stream = client.follow_events(options).await?;
    loop {
        print_event(&stream.next().await?, a.json)?;
    }
}

/// One event as a line: its time, type, what it is about, and its data as `key=value`.
fn print_event(e: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string(e)?);
        return Ok(());
    }
    let ev = &e.event;
    let mut line = format!("{}  {:<10}  {:<18}", ev.at, e.id, ev.event_type.as_str());
    match (&ev.task_id, &ev.workflow_id) {
        (Some(t), _) => line.push_str(&format!(
            "  {t}  {}/{}",
            ev.queue.as_deref().unwrap_or("-"),
            ev.kind.as_deref().unwrap_or("-")
        )),
        (None, Some(w)) => line.push_str(&format!("  workflow {w}")),
        (None, None) => {
            if let Some(q) = &ev.queue {
                line.push_str(&format!("  queue {q}"));
            }
        }
    }
    if let Some(n) = ev.attempt {
        line.push_str(&format!("  attempt {n}"));
    }
    if let Some(data) = ev.data.as_object() {
        for (k, v) in data {
            match v.as_str() {
                Some(s) => line.push_str(&format!("  {k}={s:?}")),
                None => line.push_str(&format!("  {k}={v}")),
            }
        }
    }
    out!("{line}");
    Ok(())
}

/// Follows the log from its current end. Taken before the caller looks at the current state,
/// so that nothing that happens after that look is missed.
async fn follow_from_now(client: &Client, mut options: EventOptions) -> anyhow::Result<EventStream> {
    options.after = Some("now".into());
    options.limit = Some(1);
    let head = client.events(&options).await?.next;
    options.after = Some(head.to_string());
    options.limit = None;
    Ok(client.follow_events(options).await?)
}

pub async fn watch_task(client: &Client, id: TaskId, json: bool) -> anyhow::Result<()> {
    let mut stream = follow_from_now(client, EventOptions { task: Some(id), ..Default::default() }).await?;
    let task = client.get(id).await?;
    if !json {
        out!("task {id} ({}/{}): {}", task.queue, task.kind, task.state);
    }
    if !task.state.is_terminal() {
        loop {
            let e = stream.next().await?;
            print_event(&e, json)?;
            if e.event.event_type.is_final() {
                break;
            }
        }
    }
    let task = client.get(id).await?;
    outcome(&task, json)
}

fn outcome(task: &taskwarden_client::Task, json: bool) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string(task)?);
    } else {
        let detail = match task.state {
            TaskState::Succeeded => task.result.as_ref().map(|r| format!(": {}", r.get())),
            _ => task.error.as_ref().map(|e| format!(": {e}")),
        };
        out!("task {} {}{}", task.id, task.state, detail.unwrap_or_default());
    }
    crate::client_cmd::succeeded(task)
}

pub async fn watch_workflow(client: &Client, id: TaskId, json: bool) -> anyhow::Result<()> {
    let options = EventOptions { workflow: Some(id), ..Default::default() };
    let mut stream = follow_from_now(client, options).await?;
    let wf = client.get_workflow(id).await?;
    if !json {
        let name = wf.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
        out!("workflow {id}{name}: {} ({} of {} tasks succeeded)", wf.state.as_str(), wf.succeeded, wf.total);
    }
    if wf.state == WorkflowState::Running {
        loop {
            let e = stream.next().await?;
            print_event(&e, json)?;
            let decided = matches!(
                e.event.event_type,
                EventType::WorkflowSucceeded | EventType::WorkflowFailed | EventType::WorkflowCancelled
            );
            if decided && e.event.task_id.is_none() {
                break;
            }
        }
    }
    let wf = client.get_workflow(id).await?;
    if json {
        out!("{}", serde_json::to_string(&wf)?);
    } else {
        out!("workflow {id} {} ({} succeeded, {} failed)", wf.state.as_str(), wf.succeeded, wf.failed);
    }
    crate::workflow_cmd::finished_ok(&wf)
}

pub async fn webhook(a: WebhookArgs) -> anyhow::Result<()> {
    let client = connect(&a.connect)?;
    match a.command {
        WebhookCommand::Add { name, url, events, queues, json } => {
            let call = taskwarden_client::CreateWebhookCall { name, url, events, queues };
            let created = client.create_webhook(&call).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                eprintln!("added webhook {}; its signing secret is shown only now:", created.webhook.name);
                out!("{}", created.secret);
            }
        }
        WebhookCommand::Ls { json } => {
            let hooks = client.webhooks().await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&hooks)?);
                return Ok(());
            }
            out!("{:<20}  {:<10}  {:>8}  {:<40}  EVENTS", "NAME", "AT EVENT", "FAILURES", "URL");
            for w in hooks {
                let events = if w.events.is_empty() { "*".to_owned() } else { w.events.join(",") };
                let state = w.disabled.map(|d| format!("  DISABLED: {d}")).unwrap_or_default();
                out!("{:<20}  {:<10}  {:>8}  {:<40}  {events}{state}", w.name, w.position, w.failures, w.url);
            }
        }
        WebhookCommand::Rm { name } => {
            client.delete_webhook(&name).await?;
            out!("removed webhook {name}");
        }
        WebhookCommand::Deliveries { name, limit, json } => {
            let deliveries = client.webhook_deliveries(&name, limit).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&deliveries)?);
                return Ok(());
            }
            for d in deliveries {
                let outcome = match (d.status, &d.error) {
                    (Some(s), None) => format!("{s}"),
                    (Some(s), Some(_)) => format!("{s} (failed)"),
                    (None, Some(e)) => format!("failed: {e}"),
                    (None, None) => "-".into(),
                };
                out!("{}  event {:<10}  {:<18}  {:>6} ms  {outcome}", d.at, d.event_id, d.event_type, d.duration_ms);
            }
        }
        WebhookCommand::Replay { name, after } => {
            let w = client.replay_webhook(&name, &after).await?;
            out!("webhook {} will be sent every matching event after {} again", w.name, w.position);
        }
        WebhookCommand::Enable { name } => {
            let w = client.enable_webhook(&name).await?;
            out!("webhook {} enabled; it goes on after event {}", w.name, w.position);
        }
    }
    Ok(())
}
