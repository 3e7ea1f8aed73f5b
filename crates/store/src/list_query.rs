//! The task-list query, written once for both SQL backends: each supplies its placeholder style,
//! its "the tags contain this" clause, and binds the arguments with its own driver's types.

use taskwarden_core::{Task, TaskState};

use crate::params::{ListTasks, TaskPage};

/// An argument of the list query, in placeholder order.
pub(crate) enum Arg<'a> {
    Text(&'a str),
    /// The cursor, `ListTasks::before`, in the backend's id type: tasks with smaller ids.
    Before,
    Limit(i64),
}

pub(crate) struct ListQuery<'a> {
    /// Everything after `SELECT ... FROM tasks`: filters, order and limit.
    pub sql: String,
    pub args: Vec<Arg<'a>>,
    limit: u32,
}

impl<'a> ListQuery<'a> {
    /// `placeholder(n)` writes the n-th parameter (1-based); `has_tag` is a clause with one `?`
    /// that holds when the task's tags contain the parameter.
    pub fn new(p: &'a ListTasks, placeholder: fn(usize) -> String, has_tag: &str) -> ListQuery<'a> {
        let mut q = ListQuery { sql: String::from(" WHERE 1 = 1"), args: Vec::new(), limit: p.limit.max(1) };
        let bind = |q: &mut ListQuery<'a>, clause: &str, arg: Arg<'a>| {
            q.args.push(arg);
            q.sql.push_str(&clause.replace('?', &placeholder(q.args.len())));
        };
        if let Some(queue) = &p.queue {
            bind(&mut q, " AND queue = ?", Arg::Text(queue));
        }
        if let Some(s) = p.state {
            // A literal, not a parameter, so the planner can pick the state's partial index. Safe:
            // the text comes from the enum, never from the caller.
            q.sql.push_str(&format!(" AND state = '{}'", s.as_str()));
            if matches!(s, TaskState::Failed | TaskState::Cancelled) {
                q.sql.push_str(" AND state IN ('failed', 'cancelled')");
            }
        }
        if let Some(kind) = &p.kind {
            bind(&mut q, " AND kind = ?", Arg::Text(kind));
        }
        if let Some(tag) = &p.tag {
            bind(&mut q, &format!(" AND {has_tag}"), Arg::Text(tag));
        }
        if p.before.is_some() {
            bind(&mut q, " AND id < ?", Arg::Before);
        }
        let limit = i64::from(q.limit);
        bind(&mut q, " ORDER BY id DESC LIMIT ?", Arg::Limit(limit));
        q
    }

    /// The page the query's rows make, with the cursor for the next one when there may be one.
    pub fn page(&self, tasks: Vec<Task>) -> TaskPage {
        let next = if tasks.len() == self.limit as usize { tasks.last().map(|t| t.id) } else { None };
        TaskPage { tasks, next }
    }
}
