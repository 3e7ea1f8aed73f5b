//! The `taskwarden` binary: argument parsing, logging set-up, and one call per command.

mod args;
mod bench;
mod client_cmd;
mod demo;
mod events_cmd;
mod exit;
mod server_cmd;
mod signal;
mod token_cmd;
mod traces;
mod worker_cmd;
mod workflow_cmd;

use clap::Parser;
use tracing_subscriber::prelude::*;

use args::{Args, Command};

// The server allocates and frees many small values per task (rows decoded, JSON bodies); glibc's
// allocator spent a quarter of a fetch on that, mimalloc a fraction of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TASKWARDEN_LOG")
        .unwrap_or_else(|_| default_filter(&args.command).into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match args.log_format {
        args::LogFormat::Json => logs.json().boxed(),
        // Colour codes only for a person at a terminal, never into a file or a log collector.
        args::LogFormat::Plain => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).boxed(),
    };
    // A worker's handlers' events at info and above also go to their task's log.
    let task_logs = matches!(args.command, Command::Worker(_))
        .then(|| taskwarden_worker::TaskLogLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(task_logs).init();
    let exporting = match &args.command {
        Command::Server(a) => traces::install(a.otlp_endpoint.as_deref(), "taskwarden-server"),
        Command::Worker(a) => traces::install(a.otlp_endpoint.as_deref(), "taskwarden-worker"),
        _ => Ok(None),
    };
    let exporting = match exporting {
        Ok(e) => e,
        Err(e) => {
            exit::report(&e);
            return std::process::ExitCode::from(exit::code(&e));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match args.command {
            Command::Server(a) => server_cmd::run(a).await,
            Command::Migrate(a) => server_cmd::migrate(a).await,
            Command::Backup(a) => server_cmd::backup(a),
            Command::Restore(a) => server_cmd::restore(a),
            Command::Worker(a) => worker_cmd::run(a).await,
            Command::Submit(a) => client_cmd::submit(a).await,
            Command::Task(a) => client_cmd::task(a).await,
            Command::Workers(a) => client_cmd::workers(a).await,
            Command::Kinds(a) => client_cmd::kinds(a).await,
            Command::Cron(a) => client_cmd::cron(a).await,
            Command::Queue(a) => client_cmd::queue(a).await,
            Command::Workflow(a) => workflow_cmd::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Token(a) => token_cmd::token(a).await,
            Command::Audit(a) => token_cmd::audit(a).await,
            Command::Events(a) => events_cmd::run(a).await,
            Command::Webhook(a) => events_cmd::webhook(a).await,
        }
    });
    drop(runtime);
    // Sends the spans not sent yet, now that nothing makes more.
    drop(exporting);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            exit::report(&e);
            std::process::ExitCode::from(exit::code(&e))
        }
    }
}

fn default_filter(command: &Command) -> &'static str {
    match command {
        Command::Server(_) | Command::Worker(_) => "info",
        _ => "warn",
    }
}
