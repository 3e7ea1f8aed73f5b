//! Wake-ups that cross nodes. Every transaction that makes tasks ready (or scheduled, or
//! finished) sends a NOTIFY on the deployment's channel as it commits; each node keeps one
//! connection LISTENing and moves its local topic counters on, so a fetch parked on node B wakes
//! the moment node A commits a task.
//!
//! When the listening connection drops (the database restarted, say), the node reconnects with
//! backoff, and on reconnecting announces every topic, since it may have missed notifications.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::topics::Topics;

/// The topics a NOTIFY payload names (see `Touched::payload`).
fn parse(payload: &str) -> [bool; 3] {
    ['r', 's', 'f'].map(|c| payload.contains(c))
}

/// Listens until `stop` is dropped. `listening` is told when the first session is subscribed.
pub(crate) async fn run(
    pg: tokio_postgres::Config,
    channel: String,
    topics: Arc<Topics>,
    mut stop: watch::Receiver<()>,
    listening: oneshot::Sender<()>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut listening = Some(listening);
    loop {
        let session = listen(&pg, &channel, &topics, &mut listening);
        tokio::select! {
            outcome = session => match outcome {
                Ok(()) => tracing::warn!("the database closed the listening connection; reconnecting"),
                Err(e) => tracing::warn!(error = %e, "listening for wake-ups failed; reconnecting"),
            },
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// One listening session; returns when the connection ends.
async fn listen(
    pg: &tokio_postgres::Config,
    channel: &str,
    topics: &Topics,
    first: &mut Option<oneshot::Sender<()>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = pg.connect(NoTls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(parse(n.payload())).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    match first.take() {
        // The node starts listening before it serves anyone: nothing was missed.
        Some(first) => drop(first.send(())),
        // Whatever happened while nobody listened is announced now.
        None => topics.announce([true; 3]),
    }
    while let Some(touched) = rx.recv().await {
        topics.announce(touched);
    }
    drop(client);
    match driver.await {
        Ok(outcome) => outcome,
        Err(_) => Ok(()),
    }
}
