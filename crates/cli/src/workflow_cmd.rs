//! `taskwarden workflow submit|wait|show|cancel`.

use std::io::Read;

use anyhow::{Context, bail};
use taskwarden_client::{TaskId, Workflow, WorkflowSpec, WorkflowState};

use crate::args::{WorkflowArgs, WorkflowCommand};

fn parse_id(id: &str) -> anyhow::Result<TaskId> {
    id.parse().with_context(|| format!("{id:?} is not a workflow id"))
}

fn print(wf: &Workflow, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(wf)?);
        return Ok(());
    }
    println!("id:        {}", wf.id);
    if let Some(n) = &wf.name {
        println!("name:      {n}");
    }
    println!("state:     {}", wf.state.as_str());
    println!("tasks:     {} ({} succeeded, {} failed)", wf.total, wf.succeeded, wf.failed);
    if let Some(r) = &wf.result {
        println!("result:    {}", r.get());
    }
    if let Some(e) = &wf.error {
        println!("error:     {e}");
    }
    if let Some(s) = &wf.speedup {
        println!("speedup report:");
        println!("  T_serial      {:>10.3} s  (sum of every attempt's run time)", s.t_serial.as_secs_f64());
        println!("  T_parallel    {:>10.3} s  (first start to last finish)", s.t_parallel.as_secs_f64());
        println!("  speedup       {:>10.2} x  (T_serial / T_parallel)", s.speedup);
        println!("  peak running  {:>10}    tasks at once", s.peak_parallelism);
        println!("  efficiency    {:>10.2}    (speedup / peak running)", s.efficiency);
        println!(
            "  critical path {:>10.3} s  (longest chain of run times: no schedule beats it)",
            s.critical_path.as_secs_f64()
        );
        println!(
            "  queue wait    {:>10.3} s  (total time tasks were ready but not started)",
            s.queue_wait.as_secs_f64()
        );
    }
    if !wf.nodes.is_empty() {
        println!("{:<24}  {:<36}  STATE", "NODE", "TASK");
        for n in &wf.nodes {
            println!("{:<24}  {:<36}  {}", n.node, n.task_id, n.state);
        }
    }
    Ok(())
}

fn finished_ok(wf: &Workflow) -> anyhow::Result<()> {
    if wf.state != WorkflowState::Succeeded {
        bail!(
            "workflow {} ended {}{}",
            wf.id,
            wf.state.as_str(),
            wf.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn run(a: WorkflowArgs) -> anyhow::Result<()> {
    let client = crate::client_cmd::connect(&a.connect)?;
    match a.command {
        WorkflowCommand::Submit { file, wait, timeout, json } => {
            let mut text = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            }
            let spec: WorkflowSpec =
                serde_json::from_str(&text).with_context(|| format!("{} is not a workflow", file.display()))?;
            let mut wf = client.submit_workflow(&spec).await?;
            if wait {
                wf = client.wait_workflow(wf.id, timeout).await?;
                print(&wf, json)?;
                return finished_ok(&wf);
            }
            if json {
                print(&wf, true)
            } else {
                println!("{}", wf.id);
                Ok(())
            }
        }
        WorkflowCommand::Wait { id, timeout, json } => {
            let wf = client.wait_workflow(parse_id(&id)?, timeout).await?;
            print(&wf, json)?;
            finished_ok(&wf)
        }
        WorkflowCommand::Show { id, json } => print(&client.get_workflow(parse_id(&id)?).await?, json),
        WorkflowCommand::Cancel { id, json } => print(&client.cancel_workflow(parse_id(&id)?).await?, json),
    }
}
