//! Dead letters on RabbitMQ: what is dead-lettered at once and with which kind, and `dead-letters
//! dump | retry | purge` on django-cqrs's own letters.

use std::time::Duration;

use cqrs::message::Expires;
use cqrs::transport::dead_letter_queue;
use cqrs_tests::*;
use serde_json::{Value, json};

fn dead_letter_copies(file: &str) -> Vec<Vec<u8>> {
    capture(file)
        .into_iter()
        .filter(|(k, _)| k.starts_with("cqrs.dead_letter_"))
        .map(|(_, b)| b)
        .collect()
}

/// django-cqrs's own dead letters (captures 20 and 21) in our dead-letter queue: dump lists and
/// keeps them, retry re-publishes them as `cqrs_dead_letters retry` does (capture 22) and a fixed
/// one applies, purge empties.
#[test]
fn dead_letters_dump_retry_purge_like_django_cqrs() {
    dump_retry_purge(TestBroker::new());
}

/// The same on a quorum dead-letter queue.
#[test]
fn dead_letters_dump_retry_purge_on_a_quorum_queue() {
    dump_retry_purge(TestBroker::quorum());
}

fn dump_retry_purge(b: TestBroker) {
    use cqrs::ops::dead_letters::{Action, Filter, run};
    let replica = TestReplica::new(&b, item_and_typed_registry(Kind::Postgres));
    let dl_key = format!("cqrs.dead_letter_{}.item", b.queue);
    let letters: Vec<Vec<u8>> = dead_letter_copies("20_replica_retry_then_dead_letter.json")
        .into_iter()
        .chain(dead_letter_copies("21_replica_expired_to_dead_letter.json"))
        .collect();
    assert_eq!(letters.len(), 2);
    // The first as our consumer dead-letters (with the master's message id), the second as
    // django-cqrs does (none).
    for (l, id) in letters.iter().zip([Some("outbox-row-1"), None]) {
        b.publish_raw_with_id(&dl_key, l, id);
    }
    let dlq = dead_letter_queue(&b.queue);

    let mut out = Vec::new();
    let r = run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Dump,
        &Filter::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!((r.total, r.done), (2, 2));
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let originals: Vec<Value> = letters
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines, originals);
    // The letters the dump read come back to the queue once its channel is closed.
    wait_until(
        Duration::from_secs(10),
        "the dumped letters to be back in the dead-letter queue",
        || b.count(&dlq) >= 2,
    );
    assert_eq!(b.count(&dlq), 2, "dump keeps every letter");

    let filter = Filter {
        cqrs_ids: vec!["item".into()],
        limit: Some(1),
    };
    let r = run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Retry,
        &filter,
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!((r.matched, r.done), (1, 1));
    let r = run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Retry,
        &Filter::default(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(r.done, 1);
    wait_until(
        Duration::from_secs(10),
        "the retried letters to leave the dead-letter queue",
        || b.count(&dlq) == 0,
    );
    assert_eq!(
        b.count(&dlq),
        0,
        "a letter is removed once its copy is confirmed"
    );
    let retried = b.drain(&b.queue);
    let django: Vec<(String, Value)> = capture("22_dead_letters_retry.json")
        .into_iter()
        .map(|(k, body)| {
            (
                k.replace("bench_replica", &b.queue),
                serde_json::from_slice(&body).unwrap(),
            )
        })
        .collect();
    assert_eq!(retried.len(), django.len());
    let ids: Vec<Option<String>> = retried
        .iter()
        .map(|(_, props, _)| props.message_id().as_ref().map(|m| m.to_string()))
        .collect();
    assert!(
        ids.contains(&Some("outbox-row-1".into())) && ids.contains(&None),
        "a re-driven letter keeps its message id: {ids:?}"
    );
    for ((key, _, body), (django_key, django_body)) in retried.iter().zip(&django) {
        let mut ours: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(key, django_key);
        assert_eq!(ours["retries"], json!(0));
        let expires = cqrs::message::parse_datetime(ours["expires"].as_str().unwrap()).unwrap();
        let in_a_day = chrono::Utc::now() + chrono::Duration::days(1);
        assert!(
            (in_a_day - expires).num_seconds().abs() < 60,
            "expires now + 1 day"
        );
        let mut theirs = django_body.clone();
        ours["expires"] = Value::Null;
        theirs["expires"] = Value::Null;
        assert_eq!(
            ours, theirs,
            "the rest of the body as django-cqrs re-publishes it"
        );
    }

    // The expired letter (21) is otherwise valid: once retried it applies.
    b.publish_raw(&dl_key, &letters[1]);
    run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Retry,
        &Filter::default(),
        &mut Vec::new(),
    )
    .unwrap();
    let mut c = replica.consumer();
    c.drain(Duration::from_millis(500)).unwrap();
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [990002]);
    drop(c);

    // The first as our consumer dead-letters (with the master's message id), the second as
    // django-cqrs does (none).
    for (l, id) in letters.iter().zip([Some("outbox-row-1"), None]) {
        b.publish_raw_with_id(&dl_key, l, id);
    }
    wait_until(
        Duration::from_secs(10),
        "both letters to be in the dead-letter queue",
        || b.count(&dlq) >= 2,
    );
    let r = run(
        &mut b.transport.letters(&b.queue).unwrap(),
        &b.queue,
        Action::Purge,
        &Filter::default(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(r.done, 2);
    assert_eq!(b.count(&dlq), 0);
}

fn error_kinds(b: &TestBroker) -> Vec<String> {
    b.drain(&dead_letter_queue(&b.queue))
        .iter()
        .map(|(_, p, _)| {
            p.headers()
                .as_ref()
                .and_then(|h| {
                    h.inner()
                        .get("cqrs-error-kind")
                        .and_then(|v| v.as_long_string())
                        .map(|s| s.to_string())
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Non-JSON, no cqrs_id, unknown model, expired, oversized: each dead-lettered at once with its
/// kind; nothing crashes, nothing blocks, the good messages around them apply.
#[test]
fn undeliverable_messages_are_dead_lettered_at_once_with_their_kind() {
    let b = TestBroker::new();
    let mut r = TestReplica::new(&b, item_registry());
    r.settings.max_body_bytes = 2048;
    b.declare(&["ghost"]); // bound, but no replica of it is registered
    b.publish_raw("item", &ItemState::new(1, 0, at(0)).save().encode());
    b.publish_raw("item", b"{not json");
    b.publish_raw(
        "item",
        json!({"signal_type": "SAVE", "instance_data": {}, "instance_pk": 1})
            .to_string()
            .as_bytes(),
    );
    let mut ghost = ItemState::new(2, 0, at(0)).save();
    ghost.cqrs_id = "ghost".into();
    b.publish_raw("ghost", &ghost.encode());
    let mut expired = ItemState::new(3, 0, at(0)).save();
    expired.expires = Expires::At(at(0));
    b.publish_raw("item", &expired.encode());
    let mut big = ItemState::new(4, 0, at(0));
    big.name = "x".repeat(4096);
    b.publish_raw("item", &big.save().encode());
    b.publish_raw("item", &ItemState::new(5, 0, at(0)).save().encode());
    let mut c = r.consumer();
    c.drain(Duration::from_millis(500)).unwrap();
    assert_eq!(items(c.db()).keys().copied().collect::<Vec<_>>(), [1, 5]);
    assert_eq!(c.stats().retried, 0);
    drop(c);
    wait_until(
        Duration::from_secs(10),
        "the five dead letters to be in the dead-letter queue",
        || b.count(&dead_letter_queue(&b.queue)) >= 5,
    );
    assert_eq!(
        error_kinds(&b),
        [
            "malformed",
            "malformed",
            "unknown-model",
            "expired",
            "too-large"
        ]
    );
    assert_eq!(b.count(&b.queue), 0);
}
