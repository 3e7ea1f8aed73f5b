//! The store, counted: every call goes through to the real store, and what comes back (tasks
//! created, leased, finished) moves the counters. The one place the metrics learn of tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use taskwarden_core::Task;
use taskwarden_core::TaskId;
use taskwarden_core::Timestamp;
use taskwarden_core::auth::{AuditEntry, TokenRecord};
use taskwarden_core::cron::CronInfo;
use taskwarden_core::events::{Event, EventId};
use taskwarden_core::lifecycle::Cancellation;
use taskwarden_core::protocol::{LeaseStatus, QueueInfo, WorkerInfo};
use taskwarden_core::webhooks::{Delivery, Webhook};
use taskwarden_core::workflow::{FanOut, ParentResult, Workflow, WorkflowState};
use taskwarden_store::*;
use tokio::sync::watch;

use super::Metrics;

pub(crate) struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub(crate) fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn submit(&self, p: SubmitTasks) -> Result<Vec<Submitted>> {
        let (started, items) = (Instant::now(), p.tasks.len());
        let submitted = self.inner.submit(p).await?;
        self.metrics.store_call("submit", started, items);
        for s in submitted.iter().filter(|s| s.created) {
            self.metrics.submitted(&s.task.queue, &s.task.kind);
        }
        Ok(submitted)
    }

    async fn get(&self, id: TaskId) -> Result<Task> {
        self.inner.get(id).await
    }

    async fn list(&self, p: ListTasks) -> Result<TaskPage> {
        self.inner.list(p).await
    }

    async fn cancel(&self, p: CancelTask) -> Result<Cancelled> {
        let cancelled = self.inner.cancel(p).await?;
        // A running task's cancel counts when its worker reports it stopped.
        if matches!(cancelled.effect, Cancellation::Cancelled) {
            self.metrics.cancelled(&cancelled.task);
        }
        Ok(cancelled)
    }

    async fn retry(&self, p: RetryTask) -> Result<Task> {
        let task = self.inner.retry(p).await?;
        self.metrics.retried(&task);
        Ok(task)
    }

    async fn fetch(&self, p: FetchTasks) -> Result<Vec<Task>> {
        // Not timed: a long-poll's time is mostly its wait for work.
        let tasks = self.inner.fetch(p).await?;
        for task in &tasks {
            self.metrics.started(task);
        }
        Ok(tasks)
    }

    async fn heartbeat(&self, p: Heartbeat) -> Result<Vec<LeaseStatus>> {
        let (started, items) = (Instant::now(), p.leases.len());
        let statuses = self.inner.heartbeat(p).await?;
        self.metrics.store_call("heartbeat", started, items);
        Ok(statuses)
    }

    async fn report(&self, p: ReportOutcomes) -> Result<Vec<Result<Task>>> {
        let ran: Vec<Option<Duration>> = p.reports.iter().map(|r| r.ran_us.map(Duration::from_micros)).collect();
        let started = Instant::now();
        let results = self.inner.report(p).await?;
        self.metrics.store_call("report", started, results.len());
        for (result, ran) in results.iter().zip(ran) {
            match result {
                Ok(task) => self.metrics.reported(task, ran),
                Err(e) => self.metrics.report_refused(e),
            }
        }
        Ok(results)
    }

    async fn expire_leases(&self, p: ExpireLeases) -> Result<usize> {
        let n = self.inner.expire_leases(p).await?;
        self.metrics.leases_expired(n);
        Ok(n)
    }

    async fn expire_unstarted(&self, p: ExpireLeases) -> Result<usize> {
        let n = self.inner.expire_unstarted(p).await?;
        self.metrics.expired_unstarted(n);
        Ok(n)
    }

    async fn promote_due(&self, p: PromoteDue) -> Result<Promoted> {
        self.inner.promote_due(p).await
    }

    async fn prune_expired(&self, p: PruneExpired) -> Result<usize> {
        self.inner.prune_expired(p).await
    }

    async fn prune_finished(&self, p: PruneFinished) -> Result<usize> {
        self.inner.prune_finished(p).await
    }

    async fn compact(&self) -> Result<()> {
        self.inner.compact().await
    }

    async fn acquire_lease(&self, p: AcquireLease) -> Result<LeaseHolder> {
        self.inner.acquire_lease(p).await
    }

    async fn register_worker(&self, p: RegisterWorker) -> Result<WorkerInfo> {
        self.inner.register_worker(p).await
    }

    async fn update_queue(&self, p: UpdateQueue) -> Result<()> {
        self.inner.update_queue(p).await
    }

    async fn list_queues(&self, now: Timestamp) -> Result<Vec<QueueInfo>> {
        self.inner.list_queues(now).await
    }

    async fn queue_depths(&self, now: Timestamp) -> Result<Vec<QueueInfo>> {
        self.inner.queue_depths(now).await
    }

    async fn remove_queue(&self, name: &str) -> Result<()> {
        self.inner.remove_queue(name).await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        self.inner.list_workers().await
    }

    async fn remove_worker(&self, p: RemoveWorker) -> Result<()> {
        self.inner.remove_worker(p).await
    }

    async fn worker_owner(&self, worker_id: &str) -> Result<Option<String>> {
        self.inner.worker_owner(worker_id).await
    }

    async fn create_token(&self, token: TokenRecord) -> Result<TokenRecord> {
        self.inner.create_token(token).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.inner.list_tokens().await
    }

    async fn revoke_token(&self, p: RevokeToken) -> Result<TokenRecord> {
        self.inner.revoke_token(p).await
    }

    async fn touch_tokens(&self, p: TouchTokens) -> Result<()> {
        self.inner.touch_tokens(p).await
    }

    async fn record_audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        self.inner.record_audit(entries).await
    }

    async fn list_audit(&self, p: ListAudit) -> Result<Vec<AuditEntry>> {
        self.inner.list_audit(p).await
    }

    async fn prune_audit(&self, before: Timestamp) -> Result<usize> {
        self.inner.prune_audit(before).await
    }

    async fn read_events(&self, p: ReadEvents) -> Result<Vec<Event>> {
        self.inner.read_events(p).await
    }

    async fn read_stored_events(&self, p: ReadEvents) -> Result<Vec<taskwarden_core::events::StoredEvent>> {
        self.inner.read_stored_events(p).await
    }

    async fn read_event_measures(&self, p: ReadEvents) -> Result<Vec<taskwarden_core::stats::Measured>> {
        self.inner.read_event_measures(p).await
    }

    async fn last_event_id(&self) -> Result<EventId> {
        self.inner.last_event_id().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    async fn prune_events(&self, p: PruneEvents) -> Result<usize> {
        self.inner.prune_events(p).await
    }

    async fn stats_position(&self) -> Result<EventId> {
        self.inner.stats_position().await
    }

    async fn add_stats(&self, p: AddStats) -> Result<()> {
        self.inner.add_stats(p).await
    }

    async fn read_stats(&self, p: ReadStats) -> Result<Vec<taskwarden_core::stats::StatsRow>> {
        self.inner.read_stats(p).await
    }

    async fn prune_stats(&self, before: Timestamp) -> Result<usize> {
        self.inner.prune_stats(before).await
    }

    async fn create_webhook(&self, w: Webhook) -> Result<()> {
        self.inner.create_webhook(w).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.inner.list_webhooks().await
    }

    async fn save_webhook(&self, w: Webhook, if_position: Option<EventId>) -> Result<()> {
        self.inner.save_webhook(w, if_position).await
    }

    async fn delete_webhook(&self, name: &str) -> Result<()> {
        self.inner.delete_webhook(name).await
    }

    async fn record_delivery(&self, d: Delivery) -> Result<()> {
        self.inner.record_delivery(d).await
    }

    async fn list_deliveries(&self, p: ListDeliveries) -> Result<Vec<Delivery>> {
        self.inner.list_deliveries(p).await
    }

    async fn prune_deliveries(&self, before: Timestamp) -> Result<usize> {
        self.inner.prune_deliveries(before).await
    }

    async fn task_logs(&self, p: ReadTaskLogs) -> Result<Vec<taskwarden_core::task_logs::TaskLogLine>> {
        self.inner.task_logs(p).await
    }

    async fn ready_needs(&self) -> Result<Vec<ReadyNeeds>> {
        self.inner.ready_needs().await
    }

    async fn ready_kinds(&self) -> Result<Vec<ReadyKind>> {
        self.inner.ready_kinds().await
    }

    async fn kind_schemas(&self) -> Result<Vec<KindSchema>> {
        self.inner.kind_schemas().await
    }

    async fn create_cron(&self, p: CreateCron) -> Result<CronInfo> {
        self.inner.create_cron(p).await
    }

    async fn list_crons(&self) -> Result<Vec<CronInfo>> {
        self.inner.list_crons().await
    }

    async fn pause_cron(&self, p: PauseCron) -> Result<CronInfo> {
        self.inner.pause_cron(p).await
    }

    async fn update_cron(&self, p: UpdateCron) -> Result<CronInfo> {
        self.inner.update_cron(p).await
    }

    async fn delete_cron(&self, name: &str) -> Result<()> {
        self.inner.delete_cron(name).await
    }

    async fn fire_cron(&self, p: FireCron) -> Result<bool> {
        let made: Vec<(String, String)> = p.tasks.iter().map(|t| (t.queue.clone(), t.kind.clone())).collect();
        let fired = self.inner.fire_cron(p).await?;
        if fired {
            for (queue, kind) in &made {
                self.metrics.submitted(queue, kind);
            }
        }
        Ok(fired)
    }

    async fn submit_workflow(&self, p: SubmitWorkflow) -> Result<Workflow> {
        let made: Vec<(String, String)> =
            p.plan.nodes.iter().map(|n| (n.task.queue.clone(), n.task.kind.clone())).collect();
        let workflow = self.inner.submit_workflow(p).await?;
        for (queue, kind) in &made {
            self.metrics.submitted(queue, kind);
        }
        Ok(workflow)
    }

    async fn get_workflow(&self, id: TaskId) -> Result<Workflow> {
        self.inner.get_workflow(id).await
    }

    async fn list_workflows(&self, p: ListWorkflows) -> Result<WorkflowPage> {
        self.inner.list_workflows(p).await
    }

    async fn workflow_state(&self, id: TaskId) -> Result<WorkflowState> {
        self.inner.workflow_state(id).await
    }

    async fn cancel_workflow(&self, p: CancelWorkflow) -> Result<Workflow> {
        self.inner.cancel_workflow(p).await
    }

    async fn retry_workflow(&self, p: RetryWorkflow) -> Result<Workflow> {
        self.inner.retry_workflow(p).await
    }

    async fn fan_out(&self, p: FanOutTasks) -> Result<FanOut> {
        self.inner.fan_out(p).await
    }

    async fn parents(&self, p: ListParents) -> Result<Vec<ParentResult>> {
        self.inner.parents(p).await
    }

    fn subscribe(&self, topic: Topic) -> watch::Receiver<u64> {
        self.inner.subscribe(topic)
    }

    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }

    async fn database_time(&self) -> Result<Option<Timestamp>> {
        self.inner.database_time().await
    }
}
