//! The decision on hand-made Patroni states: what Patroni 3 and 4 write is read alike, the
//! lease decides whether a primary is healthy, and a request ends only on evidence.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::super::view::{synchronous, truthy};
use super::*;

const NOW: i64 = 1_700_000_000;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn pod(instance: &str, status: Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("{instance}-0"),
            "labels": {"tusk.rs/instance": instance},
            "annotations": {"status": status.to_string()},
        }
    }))
    .unwrap()
}

fn member(instance: &str, role: &str, state: &str, timeline: i64) -> Member {
    Member::from_pod(&pod(
        instance,
        serde_json::json!({"role": role, "state": state, "timeline": timeline}),
    ))
}

fn lock(holder: &str, renewed: i64) -> Option<LeaderLock> {
    Some(LeaderLock {
        holder: format!("{holder}-0"),
        renewed: Some(at(renewed)),
        ttl_seconds: 15,
    })
}

fn settings(target: Option<&str>, kind: SwitchoverType) -> SwitchoverSettings {
    SwitchoverSettings {
        enabled: true,
        target_instance: target.map(str::to_owned),
        kind,
    }
}

fn request<'a>(
    settings: &'a SwitchoverSettings,
    instances: &'a [String],
    recorded: Option<i64>,
) -> Request<'a> {
    Request {
        settings: Some(settings),
        trigger: Some("t1"),
        acted_on: None,
        recorded_timeline: recorded,
        instances,
        held: false,
    }
}

fn instances() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

#[test]
fn patroni_3_and_4_members_read_alike() {
    let three = member("a", "master", "running", 2);
    let four = member("a", "primary", "running", 2);
    for primary in [three, four] {
        let view = PatroniView {
            members: vec![primary, member("b", "replica", "streaming", 2)],
            lock: lock("a", NOW),
            ..Default::default()
        };
        assert_eq!(
            view.healthy_primary(at(NOW)).map(Member::name),
            Some("a"),
            "{view:?}"
        );
        let s = settings(Some("b"), SwitchoverType::Switchover);
        let Decision::Request(plan) = decide(&request(&s, &instances(), None), &view, at(NOW))
        else {
            panic!("a streaming replica (Patroni 3.0.4+) is a healthy candidate");
        };
        assert_eq!(
            (plan.leader.as_deref(), plan.candidate.as_deref()),
            (Some("a-0"), Some("b-0"))
        );
    }
    let tagged = Member::from_pod(&pod(
        "b",
        serde_json::json!({"role": "replica", "state": "running", "tags": {"failover_priority": 0}}),
    ));
    assert!(
        tagged.nofailover,
        "Patroni 4's failover_priority 0 never promotes"
    );
}

#[test]
fn an_expired_lease_leaves_no_healthy_primary() {
    let view = PatroniView {
        members: vec![
            member("a", "master", "running", 2),
            member("b", "replica", "running", 2),
        ],
        // Renewed 16 s ago with a 15 s ttl: Patroni on `a` stopped renewing.
        lock: lock("a", NOW - 16),
        ..Default::default()
    };
    assert!(view.healthy_primary(at(NOW)).is_none());
    let s = settings(Some("b"), SwitchoverType::Switchover);
    assert_eq!(
        decide(&request(&s, &instances(), None), &view, at(NOW)),
        Decision::Refuse(Refusal {
            reason: REFUSED_NO_PRIMARY,
            field: FIELD_TYPE,
            message: "Switchover needs a healthy primary and the cluster has none; type \
                      Failover with a targetInstance promotes a named replica without one"
                .into()
        })
    );
    let f = settings(Some("b"), SwitchoverType::Failover);
    let Decision::Request(plan) = decide(&request(&f, &instances(), None), &view, at(NOW)) else {
        panic!("a failover needs no primary");
    };
    assert_eq!((plan.leader, plan.candidate), (None, Some("b-0".into())));
}

#[test]
fn a_request_ends_only_on_evidence() {
    let s = settings(Some("b"), SwitchoverType::Switchover);
    let names = instances();
    let ours = |pending: bool| FailoverKey {
        leader: pending.then(|| "a-0".into()),
        member: pending.then(|| "b-0".into()),
        trigger: Some("t1".into()),
        timeline: Some(2),
        from: Some("a-0".into()),
        resource_version: None,
    };
    let view = |holder: Option<&str>, b_role: &str, timeline: i64, key: FailoverKey| PatroniView {
        members: vec![
            member("a", "replica", "running", 2),
            member("b", b_role, "running", timeline),
        ],
        lock: holder.and_then(|h| lock(h, NOW)),
        failover: Some(key),
        ..Default::default()
    };
    let r = request(&s, &names, Some(2));
    let is_wait = |d: Decision| matches!(d, Decision::Wait { .. });

    // Still in the key: waiting.
    assert!(is_wait(decide(
        &r,
        &view(Some("a"), "replica", 2, ours(true)),
        at(NOW)
    )));
    // Taken, lock free: the race is on.
    assert!(is_wait(decide(
        &r,
        &view(None, "replica", 2, ours(false)),
        at(NOW)
    )));
    // `b` holds the lock, not promoted yet: waiting for its timeline.
    assert!(is_wait(decide(
        &r,
        &view(Some("b"), "master", 2, ours(false)),
        at(NOW)
    )));
    // A standby cluster's timeline never moves: the new holder is the evidence.
    assert!(matches!(
        decide(
            &r,
            &view(Some("b"), "standby_leader", 2, ours(false)),
            at(NOW)
        ),
        Decision::Finish(Finish::Completed { .. })
    ));
    // Timeline 3: done, whatever the key says.
    assert_eq!(
        decide(&r, &view(Some("b"), "master", 3, ours(true)), at(NOW)),
        Decision::Finish(Finish::Completed {
            primary: Some("b".into()),
            timeline: Some(3),
            missed_target: None
        })
    );
    // Cleared while `a` kept the lock on the same timeline: Patroni declined.
    assert!(matches!(
        decide(&r, &view(Some("a"), "replica", 2, ours(false)), at(NOW)),
        Decision::Finish(Finish::Declined { .. })
    ));
}

#[test]
fn settings_read_as_patroni_parses_them() {
    assert!(truthy(&serde_json::json!("on")) && truthy(&serde_json::json!(true)));
    assert!(!truthy(&serde_json::json!("off")) && !truthy(&serde_json::json!(0)));
    assert!(synchronous(&serde_json::json!("quorum")));
    assert!(!synchronous(&serde_json::json!(false)));
}
