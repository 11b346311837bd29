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

/// The longest replica queue name: the names derived from it (`dead_letter_<queue>`,
/// `cqrs_retry_<queue>_<ms>`) must stay within AMQP's 255-byte short strings.
pub const MAX_QUEUE_NAME: usize = 200;

/// Why `queue` cannot name a replica queue, if it cannot. Its bindings (`cqrs.<queue>.<cqrs_id>`)
/// are topic patterns, so `*` or `#` in it would bind SYNCs directed to other queues too.
///
/// ```
/// use cqrs::transport::routing::check_queue_name;
/// assert!(check_queue_name("billing.items").is_ok());
/// assert!(check_queue_name("billing.#").is_err());
/// ```
pub fn check_queue_name(queue: &str) -> Result<(), String> {
    if queue.is_empty() {
        return Err("queue name is empty".into());
    }
    if queue.len() > MAX_QUEUE_NAME {
        return Err(format!(
            "queue name is {} bytes; at most {MAX_QUEUE_NAME} fit the names derived from it",
            queue.len()
        ));
    }
    if let Some(c) = queue.chars().find(|c| matches!(c, '*' | '#')) {
        return Err(format!(
            "queue name {queue:?} contains {c:?}: its binding cqrs.{queue}.<cqrs_id> would match \
             SYNCs directed to other queues"
        ));
    }
    if queue.chars().any(char::is_control) {
        return Err(format!("queue name {queue:?} contains a control character"));
    }
    Ok(())
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
