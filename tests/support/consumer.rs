//! The consumer fixture: a replica of the test models on a [`TestBroker`]'s queue, applying to a
//! PostgreSQL database of its own, consumed either by a [`Consumer`] the test drives (poll, drain)
//! or by the `consume` service on a thread while the test runs its scenario.

use cqrs::consumer::ConsumerStats;
use cqrs::transport::amqp::AmqpInbox;
use cqrs::{Consumer, Registry, Settings, Shutdown, TableReplica};

use crate::{Kind, StopOnDrop, TestBroker, TestDb, item_spec, typed_spec};

/// Unacknowledged deliveries the inbox of [`TestReplica::consumer`] takes.
pub const PREFETCH: u16 = 100;

/// A replica consuming `broker`'s queue into `db`.
pub struct TestReplica<'b> {
    /// The broker whose queue it consumes.
    pub broker: &'b TestBroker,
    /// Its database: fresh, migrated, with the test tables.
    pub db: TestDb,
    /// The models it replicates.
    pub registry: Registry,
    /// The broker's settings with `database_url` set to `db`; change them before consuming.
    pub settings: Settings,
}

impl<'b> TestReplica<'b> {
    /// Declare `broker`'s replica queue bound for every model of `registry` (so messages published
    /// from now on wait in it) and create the replica's database.
    pub fn new(broker: &'b TestBroker, registry: Registry) -> TestReplica<'b> {
        let ids: Vec<String> = registry.replica_ids().map(str::to_string).collect();
        broker
            .transport
            .declare_replica(&broker.queue, &ids, &broker.delays)
            .unwrap();
        let db = TestDb::new(Kind::Postgres);
        let settings = Settings {
            database_url: Some(db.url.clone()),
            ..broker.settings()
        };
        TestReplica {
            broker,
            db,
            registry,
            settings,
        }
    }

    /// A consumer of the queue on a connection to `db`, for the test to poll or drain.
    pub fn consumer(&self) -> Consumer<'_, AmqpInbox> {
        let b = self.broker;
        let inbox = b.transport.inbox(&b.queue, PREFETCH, &b.delays).unwrap();
        Consumer::new(&self.registry, &self.settings, self.db.connect(), inbox)
    }

    /// Run `cqrs::service::consume` with `workers` on a thread while `body` runs, then stop it
    /// (also when `body` panics) and return what `body` returned and the workers' counters.
    /// `body` gets the shutdown the service watches, for anything else it starts.
    pub fn consuming<T>(
        &self,
        workers: usize,
        body: impl FnOnce(&Shutdown) -> T,
    ) -> (T, ConsumerStats) {
        let shutdown = Shutdown::new();
        std::thread::scope(|s| {
            let stop = StopOnDrop(&shutdown);
            let consumer = s.spawn(|| {
                cqrs::service::consume(&self.registry, &self.settings, workers, &[], &shutdown)
            });
            let out = body(&shutdown);
            drop(stop);
            (out, consumer.join().unwrap().unwrap())
        })
    }
}

/// A registry of the captured `Item` model.
pub fn item_registry() -> Registry {
    Registry::new().with_replica(TableReplica::new(item_spec()))
}

/// Apply item `msgs` to `db`'s `items` replica in one transaction, as one consumer batch would.
pub fn apply_items(db: &mut cqrs::Db, msgs: Vec<cqrs::Message>) -> cqrs::BatchReport {
    let changes: Vec<cqrs::Change> = msgs.into_iter().map(cqrs::Change::new).collect();
    let refs: Vec<&cqrs::Change> = changes.iter().collect();
    let replica = TableReplica::new(item_spec());
    db.write_transaction(|db| cqrs::Replica::apply(&replica, db, &refs))
        .expect("batch applies")
}

/// A registry of the captured `Item` and `Typed` models.
pub fn item_and_typed_registry(kind: Kind) -> Registry {
    item_registry().with_replica(TableReplica::new(typed_spec(kind)))
}
