//! Shared by the examples: a server to talk to. Uses `TASKWARDEN_URL` when set; otherwise starts
//! an embedded server on a temporary data dir, so the example runs with nothing else started.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub struct Server {
    pub url: String,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start() -> Result<Server, Box<dyn std::error::Error>> {
        if let Ok(url) = std::env::var("TASKWARDEN_URL") {
            return Ok(Server { url, stop: CancellationToken::new(), task: None, _dir: None });
        }
        let dir = tempfile::tempdir()?;
        let store =
            taskwarden_store::SqliteStore::open(taskwarden_store::SqliteConfig::new(dir.path().join("taskwarden.db")))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let config = taskwarden_server::ServerConfig::default();
        let task = tokio::spawn(taskwarden_server::serve(listener, Arc::new(store), config, stop.clone()));
        Ok(Server { url, stop, task: Some(task), _dir: Some(dir) })
    }

    pub async fn stop(self) -> Result<(), Box<dyn std::error::Error>> {
        self.stop.cancel();
        if let Some(task) = self.task {
            task.await??;
        }
        Ok(())
    }
}
