use super::*;

fn grant(role: Role, queues: &str) -> Grant {
    Grant { role, queues: QueueScope::parse(queues).unwrap(), payloads: false }
}

/// Every action against every role: the one table the API's routes rely on.
#[test]
fn each_role_may_take_exactly_its_actions() {
    use Action::*;
    // (action, [read, submit, worker, operator, admin])
    let table = [
        (Read, [true, true, false, true, true]),
        (Submit, [false, true, false, true, true]),
        (Work, [false, false, true, false, true]),
        (Operate, [false, false, false, true, true]),
        (Admin, [false, false, false, false, true]),
    ];
    for (action, expected) in table {
        for (role, allowed) in Role::ALL.into_iter().zip(expected) {
            let got = grant(role, "*").allows(action, None);
            assert_eq!(got.is_ok(), allowed, "{role} taking {action:?}: {got:?}");
            if let Err(Denied::Role { needed, has }) = got {
                assert_eq!(has, role);
                assert_eq!(needed, action.least_role());
            }
        }
    }
}

#[test]
fn queue_scopes_match_names_and_prefixes() {
    let scope = QueueScope::parse("billing.*, reports").unwrap();
    for (queue, inside) in
        [("billing.eu", true), ("billing.", true), ("reports", true), ("reports2", false), ("billing", false)]
    {
        assert_eq!(scope.contains(queue), inside, "{queue}");
    }
    assert!(QueueScope::parse("*").unwrap().is_all());
    assert!(QueueScope::parse("a,*").unwrap().is_all());
    assert_eq!(QueueScope::parse(" ").unwrap_err().field, "queues", "an empty list is not every queue");
    assert_eq!(scope.to_string(), "billing.*,reports");
    for bad in ["bil*ing", "a b", "*x"] {
        let e = QueueScope::parse(bad).unwrap_err();
        assert_eq!(e.field, "queues", "{bad}");
    }
}

#[test]
fn a_scoped_token_is_refused_outside_its_queues_naming_the_queue() {
    let g = grant(Role::Worker, "gpu.*");
    assert!(g.allows(Action::Work, Some("gpu.a100")).is_ok());
    let e = g.allows(Action::Work, Some("billing")).unwrap_err();
    assert_eq!(e, Denied::Queue { queue: "billing".into(), scope: "gpu.*".into() });
    assert!(e.to_string().contains("billing"));
    // The role is checked first: a read token is told about its role, not the queue.
    let e = grant(Role::Read, "gpu.*").allows(Action::Submit, Some("billing")).unwrap_err();
    assert!(matches!(e, Denied::Role { needed: Role::Submit, has: Role::Read }));
}

#[test]
fn only_read_tokens_without_the_payloads_flag_are_kept_from_payloads() {
    for role in Role::ALL {
        assert_eq!(grant(role, "*").sees_payloads(), role != Role::Read, "{role}");
    }
    assert!(Grant { payloads: true, ..grant(Role::Read, "*") }.sees_payloads());
    assert!(Grant::open().allows(Action::Admin, Some("any")).is_ok());
}

#[test]
fn a_scoped_admin_may_not_manage_tokens_and_none_can_be_made() {
    let scoped = grant(Role::Admin, "billing.*");
    assert!(scoped.allows(Action::Operate, Some("billing.eu")).is_ok());
    assert!(matches!(scoped.allows(Action::Admin, None), Err(Denied::Queue { .. })));
    let req = TokenRequest {
        name: "x".into(),
        role: Role::Admin,
        queues: QueueScope::parse("billing.*").unwrap(),
        payloads: false,
        expires_at: None,
    };
    assert_eq!(req.validate().unwrap_err().field, "queues");
}

#[test]
fn tokens_are_unusable_once_revoked_or_expired() {
    let at = Timestamp::from_millis;
    let mut t = TokenRecord {
        id: "tok_1".into(),
        name: "ci".into(),
        role: Role::Submit,
        queues: QueueScope::all(),
        payloads: false,
        secret_hash: "00".into(),
        created_at: at(0),
        expires_at: Some(at(1000)),
        revoked_at: None,
        last_used_at: None,
    };
    assert!(t.usable(at(999)));
    assert!(!t.usable(at(1000)));
    t.expires_at = None;
    assert!(t.usable(at(5000)));
    t.revoked_at = Some(at(10));
    assert!(!t.usable(at(11)));
    assert_eq!(t.info().queues, "*");
    assert!(!serde_json::to_string(&t.info()).unwrap().contains("secret"));
}

#[test]
fn an_issued_token_keeps_only_the_hash_of_its_secret() {
    let req = TokenRequest {
        name: "ci".into(),
        role: Role::Worker,
        queues: QueueScope::parse("gpu.*").unwrap(),
        payloads: false,
        expires_at: None,
    };
    req.validate().unwrap();
    let (secret, record) = req.clone().issue([7; 36], Timestamp::from_millis(5));
    assert!(secret.starts_with("tw_") && secret.len() == 3 + 64, "{secret}");
    assert_eq!(record.id, "tok_07070707");
    assert_eq!(record.secret_hash, hash_secret(&secret));
    assert_ne!(record.secret_hash, secret);
    assert!(!serde_json::to_string(&record).unwrap().contains(&secret));
    let (other, _) = req.issue([8; 36], Timestamp::from_millis(5));
    assert_ne!(hash_secret(&other), record.secret_hash);
    for bad in ["", "has space", "tok_x", &"x".repeat(65)] {
        let r = TokenRequest {
            name: bad.into(),
            role: Role::Read,
            queues: QueueScope::all(),
            payloads: false,
            expires_at: None,
        };
        assert_eq!(r.validate().unwrap_err().field, "name", "{bad:?}");
    }
}
