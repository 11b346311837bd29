//! Triple-shuffle property test: random histories of creates, updates, deletes and broadcast syncs,
//! delivered shuffled, duplicated and in random batch sizes, three times over; the replica must
//! equal the master's final state every time.
//!
//! A deleted pk is re-created only after its DELETE was delivered (ARCHITECTURE.md §5 "Known limit"):
//! the history is cut into epochs at each such re-creation and epochs are delivered in order.

use std::collections::BTreeMap;

use cqrs::{Change, Db, Message, Replica, TableReplica};
use cqrs_tests::*;
use proptest::prelude::*;

/// A small deterministic generator driven by proptest's seed (shuffles, duplicates, batch sizes).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Replays `ops` (kind, pk) on a simulated master; returns epochs of messages and the final rows.
fn history(ops: &[(u8, i64)]) -> (Vec<Vec<Message>>, BTreeMap<i64, ItemState>) {
    let mut master: BTreeMap<i64, ItemState> = BTreeMap::new();
    let mut last_rev: BTreeMap<i64, i32> = BTreeMap::new();
    let mut deleted_this_epoch = std::collections::BTreeSet::new();
    let mut epochs = vec![Vec::new()];
    for (clock, &(kind, pk)) in ops.iter().enumerate() {
        let now = at(clock as i64 + 1);
        match (kind, master.get(&pk).cloned()) {
            (0 | 1, None) => {
                if deleted_this_epoch.contains(&pk) {
                    epochs.push(Vec::new());
                    deleted_this_epoch.clear();
                }
                let s = ItemState::new(pk, 0, now);
                epochs.last_mut().unwrap().push(s.save());
                master.insert(pk, s);
            }
            (0 | 1, Some(old)) => {
                let mut s = ItemState::new(pk, old.rev + 1, now);
                s.value = old.value * 7 + clock as i64;
                epochs.last_mut().unwrap().push(s.save());
                master.insert(pk, s);
            }
            (2, Some(old)) => {
                epochs
                    .last_mut()
                    .unwrap()
                    .push(item_delete(pk, old.rev + 1, now));
                last_rev.insert(pk, old.rev + 1);
                master.remove(&pk);
                deleted_this_epoch.insert(pk);
            }
            (3, Some(old)) => epochs.last_mut().unwrap().push(old.sync()),
            _ => {}
        }
    }
    (epochs, master)
}

fn deliver(db: &mut Db, epochs: &[Vec<Message>], rng: &mut Rng) {
    let replica = TableReplica::new(item_spec());
    for epoch in epochs {
        let mut stream: Vec<Change> = Vec::new();
        for m in epoch {
            for _ in 0..1 + rng.below(3) {
                stream.push(Change::new(m.clone()));
            }
        }
        for i in (1..stream.len()).rev() {
            stream.swap(i, rng.below(i + 1));
        }
        let mut rest: &[Change] = &stream;
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at((1 + rng.below(8)).min(rest.len()));
            rest = tail;
            let refs: Vec<&Change> = batch.iter().collect();
            let report = db.write_transaction(|db| replica.apply(db, &refs)).unwrap();
            assert!(
                report.outcomes.iter().all(|o| o.is_final()),
                "{:?}",
                report.outcomes
            );
        }
    }
}

fn check(kind: Kind, cases: u32) {
    let t = TestDb::new(kind);
    let db = std::cell::RefCell::new(t.connect());
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in prop::collection::vec((0u8..4, 0i64..24), 1..160), seed in any::<u64>())| {
        let (epochs, master) = history(&ops);
        let mut rng = Rng(seed | 1);
        let mut db = db.borrow_mut();
        for round in 0..3 {
            db.batch_execute("DELETE FROM items; DELETE FROM cqrs_tombstones").unwrap();
            deliver(&mut db, &epochs, &mut rng);
            let replica = items(&mut db);
            let got: BTreeMap<i64, (String, i64, i32, chrono::DateTime<chrono::Utc>)> =
                replica.into_iter().map(|(k, r)| (k, (r.name, r.value, r.rev, r.updated))).collect();
            let want: BTreeMap<i64, (String, i64, i32, chrono::DateTime<chrono::Utc>)> =
                master.iter().map(|(k, s)| (*k, (s.name.clone(), s.value, s.rev, s.updated))).collect();
            prop_assert_eq!(got, want, "round {}", round);
        }
    });
}

#[test]
fn triple_shuffle_converges_postgres() {
    check(Kind::Postgres, 24);
}

#[test]
fn triple_shuffle_converges_sqlite() {
    check(Kind::Sqlite, 96);
}
