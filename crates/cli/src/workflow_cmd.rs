//! `taskwarden workflow submit|wait|ls|show|cancel|retry`.

use std::io::Read;

use taskwarden_client::{TaskId, Workflow, WorkflowListOptions, WorkflowSpec, WorkflowState};

use crate::args::{WorkflowArgs, WorkflowCommand};
use crate::exit::{Unsuccessful, out, usage};

fn parse_id(id: &str) -> anyhow::Result<TaskId> {
    match id.parse() {
        Ok(id) => Ok(id),
        Err(_) => usage!("{id:?} is not a workflow id"),
    }
}

pub(crate) fn print(wf: &Workflow, json: bool) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(wf)?);
        return Ok(());
    }
    out!("id:        {}", wf.id);
    if let Some(n) = &wf.name {
        out!("name:      {n}");
    }
    out!("state:     {}", wf.state.as_str());
    out!("tasks:     {} ({} succeeded, {} failed)", wf.total, wf.succeeded, wf.failed);
    if let Some(r) = &wf.result {
        out!("result:    {}", r.get());
    }
    if let Some(e) = &wf.error {
        out!("error:     {e}");
    }
    if let Some(s) = &wf.speedup {
        out!("speedup report:");
        out!("  T_serial      {:>10.3} s  (sum of every attempt's run time)", s.t_serial.as_secs_f64());
        out!("  T_parallel    {:>10.3} s  (first start to last finish)", s.t_parallel.as_secs_f64());
        out!("  speedup       {:>10.2} x  (T_serial / T_parallel)", s.speedup);
        out!("  peak running  {:>10}    tasks at once", s.peak_parallelism);
        out!("  efficiency    {:>10.2}    (speedup / peak running)", s.efficiency);
        out!(
            "  critical path {:>10.3} s  (longest chain of run times: no schedule beats it)",
            s.critical_path.as_secs_f64()
        );
        out!("  queue wait    {:>10.3} s  (total time tasks were ready but not started)", s.queue_wait.as_secs_f64());
    }
    if !wf.nodes.is_empty() {
        out!("{:<24}  {:<36}  STATE", "NODE", "TASK");
        for n in &wf.nodes {
            out!("{:<24}  {:<36}  {}", n.node, n.task_id, n.state);
        }
    }
    Ok(())
}

pub(crate) fn finished_ok(wf: &Workflow) -> anyhow::Result<()> {
    if wf.state != WorkflowState::Succeeded {
        return Err(Unsuccessful(format!(
            "workflow {} ended {}{}",
            wf.id,
            wf.state.as_str(),
            wf.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ))
        .into());
    }
    Ok(())
}

pub async fn run(a: WorkflowArgs) -> anyhow::Result<()> {
    let client = crate::client_cmd::connect(&a.connect)?;
    match a.command {
        WorkflowCommand::Submit { file, wait, timeout, json } => {
            let mut text = String::new();
            let read = match file.as_os_str() == "-" {
                true => std::io::stdin().read_to_string(&mut text).map(drop),
                false => std::fs::read_to_string(&file).map(|t| text = t),
            };
            if let Err(e) = read {
                usage!("reading {}: {e}", file.display());
            }
            let spec: WorkflowSpec = match serde_json::from_str(&text) {
                Ok(spec) => spec,
                Err(e) => usage!("{} is not a workflow: {e}", file.display()),
            };
            let mut wf = client.submit_workflow(&spec).await?;
            if wait {
                wf = client.wait_workflow(wf.id, timeout).await?;
                print(&wf, json)?;
                return finished_ok(&wf);
            }
            if json {
                print(&wf, true)
            } else {
                out!("{}", wf.id);
                Ok(())
            }
        }
        WorkflowCommand::Watch { id, json } => crate::events_cmd::watch_workflow(&client, parse_id(&id)?, json).await,
        WorkflowCommand::Wait { id, timeout, json } => {
            let wf = client.wait_workflow(parse_id(&id)?, timeout).await?;
            print(&wf, json)?;
            finished_ok(&wf)
        }
        WorkflowCommand::Ls { state, name, limit, cursor, json } => {
            let state = match state.map(|s| s.parse::<WorkflowState>()).transpose() {
                Ok(state) => state,
                Err(e) => usage!("--state: {e}"),
            };
            let options = WorkflowListOptions { state, name, cursor, limit: Some(limit) };
            let page = client.workflows(&options).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(());
            }
            out!(
                "{:<36}  {:<10}  {:>7}  {:>9}  {:>6}  {:<27}  NAME",
                "ID",
                "STATE",
                "TASKS",
                "SUCCEEDED",
                "FAILED",
                "CREATED"
            );
            for w in &page.workflows {
                out!(
                    "{:<36}  {:<10}  {:>7}  {:>9}  {:>6}  {:<27}  {}",
                    w.id,
                    w.state.as_str(),
                    w.total,
                    w.succeeded,
                    w.failed,
                    w.created_at.to_string(),
                    w.name.as_deref().unwrap_or("-")
                );
            }
            if let Some(c) = page.next_cursor {
                out!("next page: --cursor {c}");
            }
            Ok(())
        }
        WorkflowCommand::Show { id, json } => print(&client.get_workflow(parse_id(&id)?).await?, json),
        WorkflowCommand::Cancel { id, json } => print(&client.cancel_workflow(parse_id(&id)?).await?, json),
        WorkflowCommand::Retry { id, json } => print(&client.retry_workflow(parse_id(&id)?).await?, json),
    }
}
