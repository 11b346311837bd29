//! PostgreSQL failover: the master's and the replica's databases on a private primary with a
//! synchronous streaming standby; the primary is killed and the standby promoted while the
//! application writes, the relay publishes and `consume -w 2` applies, every one of them given a
//! libpq multi-host URL (`postgres://h1,h2/db?target_session_attrs=read-write`). Everything
//! that committed reaches the replica, which ends equal to the master on the promoted standby,
//! and the relay listens for the outbox's notifications on the new primary.

use std::time::Duration;

use cqrs::{Db, Settings, Shutdown};
use cqrs_tests::*;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

/// One count on the database at `url`.
fn count(url: &str, sql: &str) -> i64 {
    let mut pg = PgConnection::establish(url).unwrap();
    diesel::select(diesel::dsl::sql::<BigInt>(sql))
        .get_result(&mut pg)
        .unwrap()
}

#[test]
fn a_promoted_standby_takes_over_with_nothing_lost() {
    let _alone = crate::alone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let mut primary = PrivatePostgres::start();
    let mut admin = PgConnection::establish(&primary.url("postgres")).unwrap();
    for (name, schema) in [
        ("failover_master", example_master::SCHEMA_SQL),
        ("failover_replica", example_replica::SCHEMA_SQL),
    ] {
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
        let mut db = Db::connect(&primary.url(name)).unwrap();
        db.migrate().unwrap();
        db.batch_execute(schema).unwrap();
    }
    let mut standby = primary.standby();
    // Commits wait for the standby, so the one promoted has every commit a client saw. (The
    // standby was copied before this, so once promoted it waits for nobody.)
    diesel::sql_query("ALTER SYSTEM SET synchronous_standby_names = '*'")
        .execute(&mut admin)
        .unwrap();
    diesel::sql_query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .unwrap();
    let admin_url = primary.url("postgres");
    wait_until(Duration::from_secs(60), "a synchronous standby", || {
        count(
            &admin_url,
            "(SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync')",
        ) == 1
    });
    drop(admin);
    let both = |db: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
            primary.port, standby.port
        )
    };
    let (master_url, replica_url) = (both("failover_master"), both("failover_replica"));

    let b = TestBroker::new();
    b.transport
        .declare_replica(&b.queue, &["item".into(), "typed".into()], &b.delays)
        .unwrap();
    let relay_settings = Settings {
        database_url: Some(master_url.clone()),
        batch_size: 100,
        ..b.settings()
    };
    let consumer_settings = Settings {
        database_url: Some(replica_url.clone()),
        batch_size: 100,
        ..b.settings()
    };
    let registry = example_replica::registry();
    let shutdown = Shutdown::new();
    let mut created = 0;
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&shutdown);
        let consumer =
            s.spawn(|| cqrs::service::consume(&registry, &consumer_settings, 2, &[], &shutdown));
        let relay = s.spawn(|| cqrs::service::relay(&relay_settings, &shutdown));
        let mut pg = PgConnection::establish(&master_url).unwrap();
        for round in 0..30 {
            for i in 0..20 {
                let n = round * 20 + i;
                // A write refused while there is no primary is tried again on the next one.
                loop {
                    match example_master::create_pair(&mut pg, &format!("item {n}"), n, "9.99") {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!("writer: {e}; connecting again");
                            std::thread::sleep(Duration::from_millis(200));
                            if let Ok(c) = PgConnection::establish(&master_url) {
                                pg = c;
                            }
                        }
                    }
                }
                created += 1;
            }
            if round == 10 {
                primary.crash();
                std::thread::sleep(Duration::from_secs(1));
                standby.promote();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (master_db, replica_db) = (
            standby.url("failover_master"),
            standby.url("failover_replica"),
        );
        let rows = |url: &str, replica: bool| {
            let mut pg = PgConnection::establish(url).unwrap();
            if replica {
                example_replica::all_items(&mut pg)
                    .unwrap()
                    .into_iter()
                    .map(|i| (i.id, i.title, i.value, i.cqrs_revision, i.cqrs_updated))
                    .collect::<Vec<_>>()
            } else {
                example_master::all_items(&mut pg)
                    .unwrap()
                    .into_iter()
                    .map(|i| (i.id, i.name, i.value, i.cqrs_revision, i.cqrs_updated))
                    .collect()
            }
        };
        wait_until(
            Duration::from_secs(180),
            "an empty outbox on the promoted standby and the replica's items equal to the master's",
            || {
                count(&master_db, "(SELECT count(*) FROM cqrs_outbox)") == 0
                    && rows(&replica_db, true) == rows(&master_db, false)
            },
        );
        // The relay listens on the new primary (a LISTEN lost with the old one is made again)
        // and, idle, has told writers there to notify it: its row in `cqrs_relay_idle`, keyed by
        // a live session (the table is UNLOGGED: the standby started with it empty).
        wait_until(
            Duration::from_secs(30),
            "the relay's LISTEN on the new primary, announced idle",
            || {
                count(
                    &standby.url("failover_master"),
                    "(SELECT count(*) FROM cqrs_relay_idle WHERE pid IN (SELECT pid FROM pg_stat_activity))",
                ) == 1
            },
        );
        shutdown.trigger();
        consumer.join().unwrap().unwrap();
        relay.join().unwrap().unwrap();
    });
    // Every create the writer saw commit is on the promoted standby (the one it retried after an
    // error may be there twice: its first try's commit can land without the client hearing).
    let on_master = count(
        &standby.url("failover_master"),
        "(SELECT count(*) FROM items)",
    );
    assert!(
        on_master >= created,
        "{on_master} items on the new primary, {created} created"
    );
}
