//! Routing-key rules: how queues, dead letters and directed messages are named on the exchange
//! (PROTOCOL.md "Broker topology", django-cqrs's names), and AMQP topic matching for the
//! transports that route by themselves. Pure naming, no I/O, so the capture stage can address a
//! directed SYNC without depending on any transport.

/// Routing key of a SYNC directed to `queue`, and of that queue's retries: `cqrs.<queue>.<cqrs_id>`.
pub fn directed_key(queue: &str, cqrs_id: &str) -> String {
    format!("cqrs.{queue}.{cqrs_id}")
}

/// Routing key of `queue`'s dead letters for a model: `cqrs.dead_letter_<queue>.<cqrs_id>`.
pub fn dead_letter_key(queue: &str, cqrs_id: &str) -> String {
    format!("cqrs.dead_letter_{queue}.{cqrs_id}")
}

/// The dead-letter queue of a replica queue: `dead_letter_<queue>`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("dead_letter_{queue}")
}

/// The queues bound to `routing_key`, each once and sorted; `bindings` are `(queue, pattern)`.
pub fn bound_queues<'a>(
    bindings: impl IntoIterator<Item = (&'a str, &'a str)>,
    routing_key: &str,
) -> Vec<String> {
    let mut queues: Vec<String> = bindings
        .into_iter()
        .filter(|(_, pattern)| topic_matches(pattern, routing_key))
        .map(|(q, _)| q.to_string())
        .collect();
    queues.sort();
    queues.dedup();
    queues
}

/// Match an AMQP topic pattern (`*` one word, `#` zero or more words) against a routing key.
///
/// ```
/// use cqrs::transport::routing::topic_matches;
/// assert!(topic_matches("item", "item"));
/// assert!(topic_matches("cqrs.*.item", "cqrs.q1.item"));
/// assert!(topic_matches("#", "a.b.c"));
/// assert!(!topic_matches("item", "cqrs.q1.item"));
/// ```
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}
