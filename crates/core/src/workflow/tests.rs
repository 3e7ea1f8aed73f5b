use proptest::prelude::*;

use super::*;

fn node(id: &str, deps: &[&str]) -> NodeSpec {
    NodeSpec {
        id: id.into(),
        kind: "echo".into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

fn plan(nodes: Vec<NodeSpec>) -> Result<WorkflowPlan, ValidationError> {
    WorkflowSpec { tasks: nodes, ..Default::default() }.plan(&Limits::default(), Timestamp::EPOCH)
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

#[test]
fn parents_come_before_children_and_sinks_are_found() {
    let p =
        plan(vec![node("join", &["a", "b"]), node("a", &["root"]), node("b", &["root"]), node("root", &[])]).unwrap();
    let ids: Vec<&str> = p.nodes.iter().map(|n| n.id.as_str()).collect();
    for (i, n) in p.nodes.iter().enumerate() {
        assert!(n.parents.iter().all(|&q| q < i), "{ids:?}");
    }
    assert_eq!(p.sinks.iter().map(|&s| ids[s]).collect::<Vec<_>>(), vec!["join"]);
    assert_eq!(p.nodes[0].task.queue, "default");
}

#[test]
fn bad_graphs_are_refused_with_the_culprit_named() {
    let err = plan(vec![node("a", &["ghost"])]).unwrap_err();
    assert_eq!((err.field.as_str(), err.message.as_str()), ("tasks[0].depends_on[0]", "unknown task \"ghost\""));
    let err = plan(vec![node("a", &[]), node("a", &[])]).unwrap_err();
    assert_eq!(err.field, "tasks[1].id");
    let err = plan(vec![node("a", &["c"]), node("b", &["a"]), node("c", &["b"]), node("d", &[])]).unwrap_err();
    assert_eq!(err.field, "tasks");
    // Named in the order the tasks would run (a before b, b before c, c before a), from the
    // task listed first.
    assert_eq!(err.message, "the dependencies form a cycle: a -> b -> c -> a");
    let err = plan(vec![node("self", &["self"])]).unwrap_err();
    assert!(err.message.ends_with("self -> self"), "{}", err.message);
    let err = plan(vec![node("a", &[]), NodeSpec { kind: String::new(), ..node("b", &["a"]) }]).unwrap_err();
    assert_eq!(err.field, "tasks[1].kind");
    assert_eq!(plan(vec![]).unwrap_err().field, "tasks");
}

#[test]
fn quorum_policies_are_checked() {
    let spec = |p| WorkflowSpec { failure_policy: p, tasks: vec![node("a", &[])], name: None, traceparent: None };
    let bad = [
        FailurePolicy::Quorum { min_successes: Some(0), fraction: None },
        FailurePolicy::Quorum { min_successes: None, fraction: Some(1.5) },
        FailurePolicy::Quorum { min_successes: None, fraction: None },
    ];
    for p in bad {
        assert!(spec(p).plan(&Limits::default(), Timestamp::EPOCH).is_err(), "{p:?}");
    }
    let ok = spec(FailurePolicy::Quorum { min_successes: None, fraction: Some(0.8) });
    assert!(ok.plan(&Limits::default(), Timestamp::EPOCH).is_ok());
    let json: WorkflowSpec = serde_json::from_str(
        r#"{"failure_policy": {"kind": "quorum", "fraction": 0.5}, "tasks": [{"id": "a", "kind": "echo"}]}"#,
    )
    .unwrap();
    assert_eq!(json.failure_policy, FailurePolicy::Quorum { min_successes: None, fraction: Some(0.5) });
}

#[test]
fn the_seeds_model_n_equal_tasks_on_p_workers_gives_speedup_p() {
    // n = 12 tasks of t = 100 ms on p = 4 workers: three rounds, T_parallel = 300 ms, speedup 4.
    let nodes: Vec<NodeTiming> = (0..12)
        .map(|i| {
            let round = i / 4;
            NodeTiming { parents: vec![], ready_at: at(0), attempts: vec![(at(round * 100), at(round * 100 + 100))] }
        })
        .collect();
    let r = speedup_report(&nodes);
    assert_eq!(r.t_serial, Duration::from_millis(1200));
    assert_eq!(r.t_parallel, Duration::from_millis(300));
    assert!((r.speedup - 4.0).abs() < 1e-9);
    assert_eq!(r.peak_parallelism, 4);
    assert!((r.efficiency - 1.0).abs() < 1e-9);
    assert_eq!(r.critical_path, Duration::from_millis(100));
    assert_eq!(r.queue_wait, Duration::from_millis(4 * 100 + 4 * 200));
}

#[test]
fn the_critical_path_names_its_nodes_parents_first() {
    // a (10 ms) → b (5 ms) → d (1 ms) and a → c (20 ms) → d: the chain through c is longest.
    let node = |parents: Vec<usize>, start: i64, ms: i64| NodeTiming {
        parents,
        ready_at: at(0),
        attempts: vec![(at(start), at(start + ms))],
    };
    let nodes = vec![node(vec![], 0, 10), node(vec![0], 10, 5), node(vec![0], 10, 20), node(vec![1, 2], 30, 1)];
    let r = speedup_report(&nodes);
    assert_eq!(r.critical_path, Duration::from_millis(31));
    assert_eq!(r.critical_nodes, vec![0, 2, 3]);
    // Nothing has run: no critical path to name.
    let idle = vec![NodeTiming { parents: vec![], ready_at: at(0), attempts: vec![] }];
    assert!(speedup_report(&idle).critical_nodes.is_empty());
}

/// Random DAGs: edges go from a lower to a higher index before shuffling, so there is no cycle.
fn dag() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<usize>)> {
    (1usize..40).prop_flat_map(|n| {
        let parents = proptest::collection::vec(proptest::collection::vec(any::<proptest::sample::Index>(), 0..4), n);
        let shuffle = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        (parents, shuffle).prop_map(move |(ps, perm)| {
            let parents = ps
                .into_iter()
                .enumerate()
                .map(|(i, idx)| {
                    let mut v: Vec<usize> = if i == 0 { vec![] } else { idx.iter().map(|x| x.index(i)).collect() };
                    v.sort();
                    v.dedup();
                    v
                })
                .collect();
            (parents, perm)
        })
    })
}

proptest! {
    #[test]
    fn any_acyclic_graph_is_planned_parents_first((parents, perm) in dag()) {
        let name = |i: usize| format!("n{}", perm[i]);
        let nodes: Vec<NodeSpec> = (0..parents.len()).rev()
            .map(|i| NodeSpec { id: name(i), kind: "echo".into(), depends_on: parents[i].iter().map(|&p| name(p)).collect(), ..Default::default() })
            .collect();
        let p = plan(nodes).unwrap();
        prop_assert_eq!(p.nodes.len(), parents.len());
        for (i, n) in p.nodes.iter().enumerate() {
            prop_assert!(n.parents.iter().all(|&q| q < i));
        }
        prop_assert!(!p.sinks.is_empty());
    }

    #[test]
    fn a_back_edge_is_always_reported_as_a_cycle((parents, perm) in dag()) {
        prop_assume!(parents.len() >= 2);
        let name = |i: usize| format!("n{}", perm[i]);
        let last = parents.len() - 1;
        let mut nodes: Vec<NodeSpec> = (0..parents.len())
            .map(|i| NodeSpec { id: name(i), kind: "echo".into(), depends_on: parents[i].iter().map(|&p| name(p)).collect(), ..Default::default() })
            .collect();
        // Make the chain 0 <- ... <- last explicit, then close it.
        nodes[last].depends_on.retain(|d| *d != name(0));
        nodes[last].depends_on.push(name(0));
        nodes[0].depends_on.push(name(last));
        let err = plan(nodes).unwrap_err();
        prop_assert!(err.message.contains("cycle"), "{}", err.message);
    }

    /// On any schedule that respects the graph, the report's figures bound each other as the
    /// theory says: critical path <= T_parallel, speedup <= peak parallelism.
    #[test]
    fn reports_of_valid_schedules_obey_the_bounds((parents, _perm) in dag(), workers in 1usize..8, lengths in proptest::collection::vec(1i64..50, 40)) {
        // List-schedule in index order (parents have lower indexes) on `workers` workers.
        let mut free_at = vec![0i64; workers];
        let mut end = vec![0i64; parents.len()];
        let mut nodes = Vec::new();
        for (i, ps) in parents.iter().enumerate() {
            let ready = ps.iter().map(|&p| end[p]).max().unwrap_or(0);
            let w = (0..workers).min_by_key(|&w| free_at[w]).unwrap();
            let start = ready.max(free_at[w]);
            end[i] = start + lengths[i];
            free_at[w] = end[i];
            nodes.push(NodeTiming { parents: ps.clone(), ready_at: at(ready), attempts: vec![(at(start), at(end[i]))] });
        }
        let r = speedup_report(&nodes);
        prop_assert!(r.critical_path <= r.t_parallel);
        prop_assert!(r.speedup <= r.peak_parallelism as f64 + 1e-9);
        prop_assert!(r.peak_parallelism <= workers);
        prop_assert_eq!(r.t_serial, Duration::from_millis(lengths[..parents.len()].iter().sum::<i64>() as u64));
    }
}

#[test]
fn a_quorum_is_reached_lost_or_still_open() {
    assert_eq!(quorum(Some(3), None, 5, 3, 1), QuorumOutcome::Reached);
    assert_eq!(quorum(Some(3), None, 5, 2, 2), QuorumOutcome::Open);
    assert_eq!(quorum(Some(3), None, 5, 2, 3), QuorumOutcome::Lost, "3 of 5 can no longer succeed");
    assert_eq!(quorum(None, Some(0.5), 5, 3, 0), QuorumOutcome::Reached, "half of 5 rounds up to 3");
    assert_eq!(quorum(None, Some(0.5), 5, 2, 0), QuorumOutcome::Open);
}

/// A finished workflow task in `state`, as a store hands it to the policy.
fn finished(state: crate::TaskState) -> Task {
    let spec = plan(vec![node("b", &[])]).unwrap().nodes.remove(0).task;
    let id = crate::IdGenerator::new().next(at(0), 1);
    let mut task = Task::new_node(id, spec, id, "b".into(), 0, at(0));
    task.state = state;
    task.error = (state != crate::TaskState::Succeeded).then(|| "boom".into());
    task
}

#[test]
fn fail_fast_holds_children_back_and_fails_on_the_first_failure() {
    let tally = Tally { total: 3, succeeded: 0, failed: 1, handled: 0 };
    let step = FailurePolicy::FailFast.workflow_step(&finished(crate::TaskState::Failed), false, tally);
    assert!(!step.release_children);
    let (state, why) = step.decided.unwrap();
    assert_eq!(state, WorkflowState::Failed);
    assert!(why.unwrap().contains("task b"), "the reason names the node");
    // A failure a fan-out dealt with is not the workflow's failure.
    let handled = Tally { total: 3, succeeded: 0, failed: 0, handled: 1 };
    let step = FailurePolicy::FailFast.workflow_step(&finished(crate::TaskState::Failed), true, handled);
    assert_eq!(step, WorkflowStep { release_children: true, decided: None });
}

#[test]
fn collect_and_quorum_decide_when_the_counts_say_so() {
    let ok = finished(crate::TaskState::Succeeded);
    let last = Tally { total: 3, succeeded: 2, failed: 1, handled: 0 };
    assert_eq!(FailurePolicy::Collect.workflow_step(&ok, false, last).decided, Some((WorkflowState::Succeeded, None)));
    let step = FailurePolicy::Quorum { min_successes: Some(2), fraction: None }.workflow_step(
        &ok,
        false,
        Tally { total: 5, succeeded: 2, failed: 0, handled: 0 },
    );
    assert_eq!(step, WorkflowStep { release_children: true, decided: Some((WorkflowState::Succeeded, None)) });
    let open = Tally { total: 3, succeeded: 1, failed: 0, handled: 0 };
    assert_eq!(FailurePolicy::Collect.workflow_step(&ok, false, open).decided, None);
}

#[test]
fn a_fan_out_waits_releases_or_cancels_its_join() {
    let quorum = FailurePolicy::Quorum { min_successes: Some(2), fraction: None };
    assert_eq!(quorum.fan_out_step(true, 4, 1, 0), FanOutStep::Wait);
    assert_eq!(quorum.fan_out_step(true, 4, 2, 0), FanOutStep::ReleaseJoin);
    assert_eq!(quorum.fan_out_step(false, 4, 0, 3), FanOutStep::CancelJoin);
    assert_eq!(FailurePolicy::FailFast.fan_out_step(false, 4, 0, 1), FanOutStep::CancelJoin);
    assert_eq!(FailurePolicy::Collect.fan_out_step(false, 4, 0, 4), FanOutStep::Wait);
    assert!(FailurePolicy::Collect.handles_failures() && !FailurePolicy::FailFast.handles_failures());
}
