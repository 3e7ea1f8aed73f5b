//! The task-list query, written once for both SQL backends: each supplies its [`Dialect`] (its
//! placeholders and the clauses that look inside a row) and binds the arguments with its own
//! driver's types.
//!
//! The filter splits in two. What an index answers (the queue, the state, an id or time range:
//! ids are UUIDv7, so creation times are id ranges) narrows the rows walked newest first. What
//! needs a row looked into (kind, tag, worker, error text, JSON fields) is checked on each row
//! walked; with a `window`, at most that many rows are walked per page, so a page costs a bounded
//! scan however rare the matches, and its cursor says where the walk stopped.

use taskwarden_core::search::{Document, FieldMatch};
use taskwarden_core::{Task, TaskId, TaskState};

use crate::params::{ListTasks, TaskPage};

/// An argument of the list query, in placeholder order.
#[derive(Clone)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    /// A `LIKE` pattern (with `\` escaping).
    Pattern(String),
    /// A task id, in the backend's id type.
    Id(TaskId),
    /// The path of a JSON field term, in the backend's form.
    Path(&'a FieldMatch),
    /// The value of a JSON field term, in the backend's form.
    Value(&'a FieldMatch),
    Int(i64),
}

/// What differs between the backends.
pub(crate) struct Dialect {
    /// Writes the n-th parameter (1-based).
    pub placeholder: fn(usize) -> String,
    /// Holds when the task's tags contain the one `?`.
    pub has_tag: &'static str,
    /// Holds when the error text is `LIKE` the one `?` (any case, `\` escapes).
    pub error_like: &'static str,
    /// Holds when the document's value at the first `?` (an [`Arg::Path`]) equals the second
    /// (an [`Arg::Value`]).
    pub field: fn(Document) -> &'static str,
}

/// A statement's text after its `SELECT <columns>`, with its arguments.
pub(crate) struct Statement<'a> {
    pub sql: String,
    pub args: Vec<Arg<'a>>,
}

impl<'a> Statement<'a> {
    fn new(sql: &str) -> Statement<'a> {
        Statement { sql: sql.into(), args: Vec::new() }
    }

    /// Appends `clause`, each `?` in it the next placeholder, bound to the next of `args`.
    fn bind(&mut self, d: &Dialect, clause: &str, args: impl IntoIterator<Item = Arg<'a>>) {
        let mut args = args.into_iter();
        for (i, part) in clause.split('?').enumerate() {
            if i > 0 {
                self.args.push(args.next().expect("an argument for each placeholder"));
                self.sql.push_str(&(d.placeholder)(self.args.len()));
            }
            self.sql.push_str(part);
        }
    }
}

/// A clause with its arguments, not yet numbered.
type Piece<'a> = (String, Vec<Arg<'a>>);

fn bind_all<'a>(st: &mut Statement<'a>, d: &Dialect, pieces: &[Piece<'a>]) {
    for (clause, args) in pieces {
        st.bind(d, clause, args.iter().cloned());
    }
}

pub(crate) struct ListQuery<'a> {
    /// The rows of the page: `SELECT <columns>` then this.
    pub rows: Statement<'a>,
    /// With a window: the id of the window's last row (`SELECT id` then this), asked for when
    /// the page came out short.
    pub edge: Option<Statement<'a>>,
    limit: u32,
}

impl<'a> ListQuery<'a> {
    pub fn new(p: &'a ListTasks, d: &Dialect) -> ListQuery<'a> {
        let f = &p.filter;
        let limit = p.limit.max(1);
        // What an index answers.
        let mut narrow: Vec<Piece<'a>> = Vec::new();
        if let Some(id) = f.id {
            narrow.push((" AND id = ?".into(), vec![Arg::Id(id)]));
        }
        if let Some(queue) = &f.queue {
            narrow.push((" AND queue = ?".into(), vec![Arg::Text(queue)]));
        }
        if let Some(s) = f.state {
            // A literal, not a parameter, so the planner can pick the state's partial index.
            // Safe: the text comes from the enum, never from the caller.
            let mut clause = format!(" AND state = '{}'", s.as_str());
            if matches!(s, TaskState::Failed | TaskState::Cancelled) {
                clause.push_str(" AND state IN ('failed', 'cancelled')");
            }
            narrow.push((clause, vec![]));
        }
        if let Some(after) = f.after {
            narrow.push((" AND id >= ?".into(), vec![Arg::Id(TaskId::first_at(after))]));
        }
        if let Some(before) = f.before {
            narrow.push((" AND id < ?".into(), vec![Arg::Id(TaskId::first_at(before))]));
        }
        if let Some(before) = p.before {
            narrow.push((" AND id < ?".into(), vec![Arg::Id(before)]));
        }
        // What needs each row looked into.
        let mut look: Vec<Piece<'a>> = Vec::new();
        if let Some(kind) = &f.kind {
            look.push((" AND kind = ?".into(), vec![Arg::Text(kind)]));
        }
        if let Some(tag) = &f.tag {
            look.push((format!(" AND {}", d.has_tag), vec![Arg::Text(tag)]));
        }
        if let Some(worker) = &f.worker {
            look.push((" AND lease_worker = ?".into(), vec![Arg::Text(worker)]));
        }
        if let Some(error) = &f.error {
            look.push((format!(" AND {}", d.error_like), vec![Arg::Pattern(like_pattern(error))]));
        }
        for m in &f.fields {
            look.push((format!(" AND {}", (d.field)(m.document)), vec![Arg::Path(m), Arg::Value(m)]));
        }
        let limit_arg = Arg::Int(i64::from(limit));
        let Some(window) = p.window.filter(|_| !look.is_empty()) else {
            // Everything in one WHERE, walked until the page is full.
            let mut rows = Statement::new(" FROM tasks WHERE 1 = 1");
            bind_all(&mut rows, d, &narrow);
            bind_all(&mut rows, d, &look);
            rows.bind(d, " ORDER BY id DESC LIMIT ?", [limit_arg]);
            return ListQuery { rows, edge: None, limit };
        };
        // The window's rows, newest first, looked into as they stream (no outer sort: the
        // inner order is kept), stopping when the page is full or the window ends.
        let mut rows = Statement::new(" FROM (SELECT * FROM tasks WHERE 1 = 1");
        bind_all(&mut rows, d, &narrow);
        rows.bind(d, " ORDER BY id DESC LIMIT ?) AS tasks WHERE 1 = 1", [Arg::Int(i64::from(window))]);
        bind_all(&mut rows, d, &look);
        rows.bind(d, " LIMIT ?", [limit_arg]);
        let mut edge = Statement::new(" FROM tasks WHERE 1 = 1");
        bind_all(&mut edge, d, &narrow);
        edge.bind(d, " ORDER BY id DESC LIMIT 1 OFFSET ?", [Arg::Int(i64::from(window) - 1)]);
        ListQuery { rows, edge: Some(edge), limit }
    }

    /// The page the query's rows make: the cursor after the last task when the page is full,
    /// else after the window's last row (`edge`: the window was full), else none.
    pub fn page(&self, mut tasks: Vec<Task>, edge: Option<TaskId>) -> TaskPage {
        tasks.sort_by_key(|t| std::cmp::Reverse(t.id));
        let next = if tasks.len() == self.limit as usize { tasks.last().map(|t| t.id) } else { edge };
        TaskPage { tasks, next }
    }
}

/// `%text%`, with `LIKE`'s own characters escaped by `\`.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}
