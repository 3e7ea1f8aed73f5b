//! Every route × every role × a queue inside and outside the token's scope: 2xx where the role
//! and scope allow it, 403 where not. Run on both stores. The routes are checked against the
//! OpenAPI document, so a new route cannot be left out of this table.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestServer, make_token};
use taskwarden_core::auth::Role;
use taskwarden_server::ServerConfig;
use taskwarden_store::pg_testing::TestSchema;
use taskwarden_store::{PgStore, SqliteConfig, SqliteStore, Store};

/// Inside every scoped token's scope (`in.*`), and outside it.
const IN: &str = "in.q";
const OUT: &str = "out.q";

/// What a route needs, as its table row says.
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Nothing,
    At(Role),
    /// The role, with a token for every queue (a list that spans queues).
    EveryQueueAt(Role),
}

struct Fixtures<'a> {
    s: &'a TestServer,
    store: Arc<dyn Store>,
    admin: String,
    seq: AtomicU32,
}

impl Fixtures<'_> {
    fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.s.as_token(&self.admin).call(method, path, body).await;
        assert!((200..300).contains(&status), "fixture {method} {path}: {status} {v}");
        v
    }

    /// A bulk job (cancelling nothing) started by the admin.
    async fn job(&self) -> String {
        let body = json!({"action": "cancel", "filter": {"queue": "in.jobs", "kind": "none"}});
        self.admin("POST", "/v1/tasks/jobs", Some(body)).await["id"].as_str().unwrap().to_owned()
    }

    /// A worker on `q` last seen a minute ago: lost.
    async fn lost_worker(&self, q: &str) -> String {
        let minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
        let p = taskwarden_store::RegisterWorker {
            name: "lost".into(),
            owner: None,
            queues: vec![q.into()],
            concurrency: 1,
            capacity: Default::default(),
            labels: Default::default(),
            kinds: Vec::new(),
            schemas: Default::default(),
            now: taskwarden_core::Timestamp::from_system_time(minute_ago),
        };
        self.store.register_worker(p).await.unwrap().id
    }

    async fn task(&self, q: &str) -> String {
        let t = self.admin("POST", "/v1/tasks", Some(json!({"queue": q, "kind": "echo"}))).await;
        t["id"].as_str().unwrap().to_owned()
    }

    /// A worker registered by `token` when it may register one on `q`, else by the admin; with
    /// the token that registered it.
    async fn worker(&self, token: &str, q: &str) -> (String, String) {
        let body = json!({"name": "w", "queues": [q], "concurrency": 4});
        let (status, w) = self.s.as_token(token).call("POST", "/v1/workers", Some(body.clone())).await;
        let (w, owner) = match status {
            201 => (w, token.to_owned()),
            _ => (self.admin("POST", "/v1/workers", Some(body)).await, self.admin.clone()),
        };
        (w["id"].as_str().unwrap().to_owned(), owner)
    }

    /// A task in `q` leased to a worker registered by `token` (or the admin): (task, lease).
    async fn leased(&self, token: &str, q: &str) -> (String, String) {
        // A queue of its own, so the fetch takes this task and no other.
        let queue = format!("{q}.{}", self.unique("l"));
        let (worker, owner) = self.worker(token, &queue).await;
        self.task(&queue).await;
        let body = json!({"queues": [queue], "limit": 1, "wait_ms": 2000});
        let (status, got) =
            self.s.as_token(&owner).call("POST", &format!("/v1/workers/{worker}/fetch"), Some(body)).await;
        assert_eq!(status, 200, "fixture fetch: {got}");
        let t = &got["tasks"][0];
        (t["id"].as_str().unwrap().to_owned(), t["lease"].as_str().unwrap().to_owned())
    }

    async fn failed(&self, q: &str) -> String {
        let (id, lease) = self.leased(&self.admin.clone(), q).await;
        self.admin(
            "POST",
            &format!("/v1/tasks/{id}/fail"),
            Some(json!({"lease": lease, "error": "x", "permanent": true})),
        )
        .await;
        id
    }

    async fn workflow(&self, q: &str) -> String {
        let w = self
            .admin("POST", "/v1/workflows", Some(json!({"tasks": [{"id": "a", "kind": "echo", "queue": q}]})))
            .await;
        w["id"].as_str().unwrap().to_owned()
    }

    /// A workflow in `q`, cancelled before it ran: decided, so it may be retried.
    async fn cancelled_workflow(&self, q: &str) -> String {
        let id = self.workflow(q).await;
        self.admin("POST", &format!("/v1/workflows/{id}/cancel"), None).await;
        id
    }

    async fn cron(&self, q: &str) -> String {
        let name = self.unique("cron");
        let spec = json!({"name": name, "schedule": "0 0 0 1 1 *", "task": {"queue": q, "kind": "echo"}});
        self.admin("POST", "/v1/cron", Some(spec)).await;
        name
    }

    async fn webhook(&self) -> String {
        let name = self.unique("hook");
        self.admin("POST", "/v1/webhooks", Some(json!({"name": name, "url": "http://127.0.0.1:9/h"}))).await;
        name
    }

    async fn throwaway_token(&self) -> String {
        let name = self.unique("tmp");
        self.admin("POST", "/v1/tokens", Some(json!({"name": name, "role": "read"}))).await;
        name
    }
}

/// The request a route is tried with, given the caller's token and the queue it is about.
async fn request(f: &Fixtures<'_>, route: (&str, &str), token: &str, q: &str) -> (String, Option<Value>) {
    let (method, path) = route;
    let p = |s: &str| s.to_owned();
    match (method, path) {
        ("get", "/healthz" | "/readyz" | "/openapi.json" | "/metrics") => (p(path), None),
        ("post", "/v1/tasks") => (p(path), Some(json!({"queue": q, "kind": "echo"}))),
        ("get", "/v1/tasks") => (format!("/v1/tasks?queue={q}"), None),
        ("get", "/v1/events") => (format!("/v1/events?queue={q}&limit=1"), None),
        ("get", "/v1/stats") => (format!("/v1/stats?queue={q}"), None),
        ("post", "/v1/tasks/batch") => (p(path), Some(json!({"tasks": [{"queue": q, "kind": "echo"}]}))),
        ("get", "/v1/tasks/{id}") => (format!("/v1/tasks/{}", f.task(q).await), None),
        ("get", "/v1/tasks/{id}/wait") => (format!("/v1/tasks/{}/wait?timeout_ms=10", f.task(q).await), None),
        ("get", "/v1/tasks/{id}/logs") => (format!("/v1/tasks/{}/logs", f.task(q).await), None),
        ("post", "/v1/tasks/{id}/cancel") => (format!("/v1/tasks/{}/cancel", f.task(q).await), None),
        ("post", "/v1/tasks/{id}/retry") => (format!("/v1/tasks/{}/retry", f.failed(q).await), None),
        ("post", "/v1/tasks/retry" | "/v1/tasks/cancel") => (p(path), Some(json!({"queue": q, "limit": 10}))),
        ("post", "/v1/tasks/{id}/complete" | "/v1/tasks/{id}/fail" | "/v1/tasks/{id}/heartbeat")
        | ("post", "/v1/tasks/{id}/progress" | "/v1/tasks/{id}/release" | "/v1/tasks/{id}/fan-out") => {
            let (id, lease) = f.leased(token, q).await;
            let body = match path.rsplit('/').next().unwrap() {
                "complete" => json!({"lease": lease, "result": 1}),
                "fail" => json!({"lease": lease, "error": "e"}),
                "progress" => json!({"lease": lease, "fraction": 0.5}),
                "fan-out" => {
                    json!({"lease": lease, "children": [{"kind": "echo", "queue": q}], "join": {"kind": "echo", "queue": q}})
                }
                _ => json!({"lease": lease}),
            };
            (path.replace("{id}", &id), Some(body))
        }
        ("post", "/v1/workers") => (p(path), Some(json!({"name": "w", "queues": [q], "concurrency": 1}))),
        (
            "get",
            "/v1/workers" | "/v1/kinds" | "/v1/queues" | "/v1/cron" | "/v1/tokens" | "/v1/audit" | "/v1/workflows"
            | "/v1/me",
        ) => (p(path), None),
        ("post", "/v1/workers/{id}/fetch") => {
            let (w, _) = f.worker(token, q).await;
            (format!("/v1/workers/{w}/fetch"), Some(json!({"queues": [q], "limit": 1, "wait_ms": 0})))
        }
        ("post", "/v1/workers/{id}/heartbeat") => {
            (format!("/v1/workers/{}/heartbeat", f.worker(token, IN).await.0), Some(json!({"leases": []})))
        }
        ("post", "/v1/workers/{id}/reports") => {
            (format!("/v1/workers/{}/reports", f.worker(token, IN).await.0), Some(json!({"reports": []})))
        }
        ("get", "/v1/tasks/{id}/parents") => (format!("/v1/tasks/{}/parents", f.leased(token, q).await.0), None),
        ("post", "/v1/workflows") => (p(path), Some(json!({"tasks": [{"id": "a", "kind": "echo", "queue": q}]}))),
        ("get", "/v1/workflows/{id}") => (format!("/v1/workflows/{}", f.workflow(q).await), None),
        ("get", "/v1/workflows/{id}/graph") => (format!("/v1/workflows/{}/graph", f.workflow(q).await), None),
        ("get", "/v1/workflows/{id}/wait") => {
            (format!("/v1/workflows/{}/wait?timeout_ms=10", f.workflow(q).await), None)
        }
        ("post", "/v1/workflows/{id}/cancel") => (format!("/v1/workflows/{}/cancel", f.workflow(q).await), None),
        ("post", "/v1/workflows/{id}/retry") => {
            (format!("/v1/workflows/{}/retry", f.cancelled_workflow(q).await), None)
        }
        ("patch", "/v1/queues/{name}") => (format!("/v1/queues/{q}?create=true"), Some(json!({"weight": 2}))),
        ("post", "/v1/queues/{name}/pause") => (format!("/v1/queues/{q}/pause?create=true"), None),
        ("post", "/v1/queues/{name}/resume") => (format!("/v1/queues/{q}/resume?create=true"), None),
        ("delete", "/v1/queues/{name}") => {
            // An empty queue of its own, in the same scope as `q`, with a setting to forget.
            let name = f.unique(&format!("{q}.rm"));
            f.admin("PATCH", &format!("/v1/queues/{name}?create=true"), Some(json!({"weight": 2}))).await;
            (format!("/v1/queues/{name}"), None)
        }
        ("post", "/v1/cron") => {
            let spec = json!({"name": f.unique("c"), "schedule": "0 0 0 1 1 *", "task": {"queue": q, "kind": "echo"}});
            (p(path), Some(spec))
        }
        ("delete", "/v1/cron/{name}") => (format!("/v1/cron/{}", f.cron(q).await), None),
        ("post", "/v1/tasks/jobs") => {
            (p(path), Some(json!({"action": "cancel", "filter": {"queue": q, "kind": "none"}})))
        }
        ("get", "/v1/tasks/jobs/{id}") => (format!("/v1/tasks/jobs/{}", f.job().await), None),
        ("delete", "/v1/workers/{id}") => (format!("/v1/workers/{}", f.lost_worker(q).await), None),
        ("post", "/v1/cron/{name}/pause") => (format!("/v1/cron/{}/pause", f.cron(q).await), None),
        ("post", "/v1/cron/{name}/resume") => (format!("/v1/cron/{}/resume", f.cron(q).await), None),
        ("post", "/v1/cron/{name}/run") => (format!("/v1/cron/{}/run", f.cron(q).await), None),
        ("patch", "/v1/cron/{name}") => {
            (format!("/v1/cron/{}", f.cron(q).await), Some(json!({"schedule": "0 0 0 2 1 *"})))
        }
        ("post", "/v1/tokens") => (p(path), Some(json!({"name": f.unique("t"), "role": "read"}))),
        ("post", "/v1/tokens/{id}/revoke") => (format!("/v1/tokens/{}/revoke", f.throwaway_token().await), None),
        ("post", "/v1/webhooks") => (p(path), Some(json!({"name": f.unique("hook"), "url": "http://127.0.0.1:9/h"}))),
        ("get", "/v1/webhooks") => (p(path), None),
        ("delete", "/v1/webhooks/{name}") => (format!("/v1/webhooks/{}", f.webhook().await), None),
        ("get", "/v1/webhooks/{name}/deliveries") => (format!("/v1/webhooks/{}/deliveries", f.webhook().await), None),
        ("post", "/v1/webhooks/{name}/replay") => {
            (format!("/v1/webhooks/{}/replay", f.webhook().await), Some(json!({"after": "0"})))
        }
        ("post", "/v1/webhooks/{name}/enable") => (format!("/v1/webhooks/{}/enable", f.webhook().await), None),
        other => panic!("no request for {other:?}: add the route to this table"),
    }
}

/// The table: each route, what it needs, and whether it is about one queue.
const ROUTES: &[(&str, &str, Needs, bool)] = {
    use Needs::{At, EveryQueueAt, Nothing};
    use Role::*;
    &[
        ("get", "/healthz", Nothing, false),
        ("get", "/readyz", Nothing, false),
        ("get", "/openapi.json", Nothing, false),
        ("get", "/metrics", EveryQueueAt(Read), false),
        ("post", "/v1/tasks", At(Submit), true),
        ("get", "/v1/tasks", At(Read), true),
        ("post", "/v1/tasks/batch", At(Submit), true),
        ("get", "/v1/tasks/{id}", At(Read), true),
        ("get", "/v1/tasks/{id}/wait", At(Read), true),
        ("get", "/v1/tasks/{id}/logs", At(Read), true),
        ("post", "/v1/tasks/{id}/cancel", At(Operator), true),
        ("post", "/v1/tasks/{id}/retry", At(Operator), true),
        ("post", "/v1/tasks/retry", At(Operator), true),
        ("post", "/v1/tasks/cancel", At(Operator), true),
        ("post", "/v1/tasks/{id}/complete", At(Worker), true),
        ("post", "/v1/tasks/{id}/fail", At(Worker), true),
        ("post", "/v1/tasks/{id}/heartbeat", At(Worker), true),
        ("post", "/v1/tasks/{id}/progress", At(Worker), true),
        ("post", "/v1/tasks/{id}/release", At(Worker), true),
        ("post", "/v1/workers", At(Worker), true),
        ("get", "/v1/workers", At(Read), false),
        ("get", "/v1/kinds", At(Read), false),
        ("post", "/v1/workers/{id}/fetch", At(Worker), true),
        ("post", "/v1/workers/{id}/heartbeat", At(Worker), false),
        ("post", "/v1/workers/{id}/reports", At(Worker), false),
        ("get", "/v1/tasks/{id}/parents", At(Worker), true),
        ("post", "/v1/tasks/{id}/fan-out", At(Worker), true),
        ("post", "/v1/workflows", At(Submit), true),
        ("get", "/v1/workflows", EveryQueueAt(Read), false),
        ("get", "/v1/workflows/{id}", At(Read), true),
        ("get", "/v1/workflows/{id}/wait", At(Read), true),
        ("get", "/v1/workflows/{id}/graph", At(Read), true),
        ("post", "/v1/workflows/{id}/cancel", At(Operator), true),
        ("post", "/v1/workflows/{id}/retry", At(Operator), true),
        ("get", "/v1/queues", At(Read), false),
        ("patch", "/v1/queues/{name}", At(Operator), true),
        ("delete", "/v1/queues/{name}", At(Operator), true),
        ("post", "/v1/queues/{name}/pause", At(Operator), true),
        ("post", "/v1/queues/{name}/resume", At(Operator), true),
        ("post", "/v1/cron", At(Operator), true),
        ("get", "/v1/cron", At(Read), false),
        ("delete", "/v1/cron/{name}", At(Operator), true),
        ("delete", "/v1/workers/{id}", At(Operator), true),
        ("post", "/v1/tasks/jobs", At(Operator), true),
        ("get", "/v1/tasks/jobs/{id}", At(Operator), false),
        ("post", "/v1/cron/{name}/pause", At(Operator), true),
        ("post", "/v1/cron/{name}/resume", At(Operator), true),
        ("post", "/v1/cron/{name}/run", At(Operator), true),
        ("patch", "/v1/cron/{name}", At(Operator), true),
        ("post", "/v1/tokens", At(Admin), false),
        ("get", "/v1/tokens", At(Admin), false),
        ("post", "/v1/tokens/{id}/revoke", At(Admin), false),
        ("get", "/v1/audit", At(Admin), false),
        ("get", "/v1/me", At(Read), false),
        ("get", "/v1/events", At(Read), true),
        ("get", "/v1/stats", At(Read), true),
        ("post", "/v1/webhooks", At(Admin), false),
        ("get", "/v1/webhooks", At(Admin), false),
        ("delete", "/v1/webhooks/{name}", At(Admin), false),
        ("get", "/v1/webhooks/{name}/deliveries", At(Admin), false),
        ("post", "/v1/webhooks/{name}/replay", At(Admin), false),
        ("post", "/v1/webhooks/{name}/enable", At(Admin), false),
    ]
};

fn allowed(role: Role, needs: Needs, queued: bool, in_scope: bool, every_queue: bool) -> bool {
    let role_ok = match needs {
        Needs::Nothing => return true,
        // Tokens and the audit log are about every queue: a scoped admin may not.
        Needs::At(Role::Admin) => role == Role::Admin && every_queue,
        Needs::EveryQueueAt(need) => {
            return every_queue && allowed(role, Needs::At(need), queued, in_scope, every_queue);
        }
        Needs::At(Role::Worker) => matches!(role, Role::Worker | Role::Admin),
        Needs::At(need) => {
            let rank = |r: Role| [Role::Read, Role::Submit, Role::Operator, Role::Admin].iter().position(|x| *x == r);
            matches!((rank(role), rank(need)), (Some(have), Some(need)) if have >= need)
        }
    };
    role_ok && (!queued || in_scope)
}

async fn every_route_every_role(store: Arc<dyn Store>, guard: Box<dyn std::any::Any + Send>) {
    let admin = make_token(&*store, "root", Role::Admin, "*", false).await;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        tokens.push((role, make_token(&*store, &format!("{role}-scoped"), role, "in.*", false).await, false));
    }
    tokens.push((Role::Admin, admin.clone(), true));
    let kept = store.clone();
    let s = TestServer::on_store(
        store,
        ServerConfig { token_refresh: Duration::from_millis(100), ..Default::default() },
        guard,
    )
    .await;

    let documented: BTreeSet<(String, String)> = {
        let doc: Value = serde_json::from_str(taskwarden_server::openapi_document()).unwrap();
        let mut all = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                all.insert((method.clone(), path.clone()));
            }
        }
        all
    };
    let tested: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p, _, _)| (m.to_string(), p.to_string())).collect();
    assert_eq!(tested, documented, "the table covers exactly the documented routes");

    let f = Fixtures { s: &s, store: kept, admin, seq: AtomicU32::new(0) };
    let mut wrong = Vec::new();
    for &(method, path, needs, queued) in ROUTES {
        for (role, token, every_queue) in &tokens {
            for (q, in_scope) in [(IN, true), (OUT, *every_queue)] {
                if !queued && q == OUT {
                    continue;
                }
                let (url, body) = request(&f, (method, path), token, q).await;
                let (status, resp) = s.as_token(token).call(&method.to_uppercase(), &url, body).await;
                let want = allowed(*role, needs, queued, in_scope, *every_queue);
                let ok = if want { (200..300).contains(&status) } else { status == 403 };
                if !ok {
                    wrong.push(format!(
                        "{method} {path} as {role}{} on {q}: want {}, got {status} {resp}",
                        if *every_queue { " (every queue)" } else { "" },
                        if want { "2xx" } else { "403" }
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} of the table's cells are wrong:\n{}", wrong.len(), wrong.join("\n"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_allows_exactly_its_roles_and_scopes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("taskwarden.db"))).unwrap();
    every_route_every_role(Arc::new(store), Box::new(dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_allows_exactly_its_roles_and_scopes_on_postgres() {
    let Some(schema) = TestSchema::new("roles").await else { return };
    let store = PgStore::open(schema.config()).await.unwrap();
    every_route_every_role(Arc::new(store), Box::new(schema)).await;
}
