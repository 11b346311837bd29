//! Capture under the awkward cases of real PostgreSQL (issue 26): the application's own triggers
//! writing back to the row, a key re-created by a concurrent transaction, a writable CTE that
//! deletes and inserts a key, session settings, two models of one table, BEFORE triggers that
//! fire after the stamp. Each case runs on the trigger-captured `t_items` and, where it
//! applies, on the atomic-captured `a_items`; what counts is the replica: after every
//! transaction it must equal the master row for row.

use std::thread;
use std::time::{Duration, Instant};

use cqrs::capture::triggers;
use cqrs::model::{CaptureMode, MasterModel as _};
use cqrs::value::ColumnType;
use cqrs::{Db, atomic};
use cqrs_tests::*;
use diesel::prelude::*;

use super::triggers::{AItem, Replica, TItem, a_items, master_db, sent, t_items};

/// The replica follows the master, and equals it.
fn converges(master: &TestDb, replica: &Replica, table: &str) {
    replica.follow(master);
    assert_eq!(
        replica.read_copy(),
        replica.read(master, table),
        "replica of {table} differs from the master"
    );
}

pub(super) fn pg(t: &TestDb) -> diesel::PgConnection {
    match t.connect() {
        Db::Pg(conn) => conn,
        Db::Sqlite(_) => unreachable!("a PostgreSQL test database"),
    }
}

/// An AFTER ROW trigger that lower-cases the name it was given, by an UPDATE of the same row
/// (a statement inside the application's statement), and an AFTER STATEMENT trigger whose name
/// sorts before capture's that trims names the same way.
pub(super) fn write_back_triggers(db: &mut Db, table: &str) {
    db.batch_execute(&format!(
        "CREATE FUNCTION {table}_lower() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN UPDATE {table} SET name = lower(name) WHERE id = NEW.id AND name <> lower(name); RETURN NULL; END $$;
         CREATE TRIGGER {table}_lower AFTER INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_lower();
         CREATE FUNCTION {table}_trim() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF pg_trigger_depth() > 1 THEN RETURN NULL; END IF;
             UPDATE {table} SET name = btrim(name) WHERE name <> btrim(name);
             RETURN NULL;
         END $$;
         CREATE TRIGGER a_{table}_trim AFTER UPDATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {table}_trim();"
    ))
    .unwrap();
}

/// (name, revision) of a row on the master.
fn name_and_revision(db: &mut Db, table: &str, id: i64) -> (String, i32) {
    let row = cqrs::db::SqlConn::load_text(
        db,
        &format!(
            "SELECT name || '|' || CAST(cqrs_revision AS TEXT) AS j FROM {table} WHERE id = {id}"
        ),
        vec![],
    )
    .unwrap();
    let (name, rev) = row[0].rsplit_once('|').unwrap();
    (name.to_string(), rev.parse().unwrap())
}

#[test]
fn a_row_the_applications_triggers_write_back_to_is_sent_in_its_final_state() {
    // Trigger capture: plain SQL.
    let t = master_db();
    let replica = Replica::new();
    let mut db = t.connect();
    write_back_triggers(&mut db, "t_items");
    db.batch_execute("INSERT INTO t_items (id, name) VALUES (1, 'AB')")
        .unwrap();
    assert_eq!(name_and_revision(&mut db, "t_items", 1).0, "ab");
    converges(&t, &replica, "t_items");
    let before = name_and_revision(&mut db, "t_items", 1).1;
    db.batch_execute("UPDATE t_items SET name = ' XY ' WHERE id = 1")
        .unwrap();
    assert_eq!(
        name_and_revision(&mut db, "t_items", 1),
        ("xy".to_string(), before + 1),
        "one revision per transaction, however many statements it set off"
    );
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(
        (msgs[0].revision().unwrap(), &msgs[0].instance_data["name"]),
        (before + 1, &serde_json::json!("xy"))
    );
    assert_eq!(
        serde_json::json!(msgs[0].previous_data),
        serde_json::json!({}),
        "no tracked field changed"
    );
    converges(&t, &replica, "t_items");

    // Atomic capture: the same through tx.insert_into and tx.update.
    let t = master_db();
    let replica = Replica::new();
    write_back_triggers(&mut t.connect(), "a_items");
    let mut conn = pg(&t);
    atomic(&mut conn, |tx| {
        tx.insert_into(a_items::table)
            .values((
                a_items::id.eq(1),
                a_items::name.eq("AB"),
                a_items::secret.eq(""),
            ))
            .execute()
    })
    .unwrap();
    converges(&t, &replica, "a_items");
    atomic(&mut conn, |tx| {
        tx.update(a_items::table.find(1))
            .set(a_items::name.eq(" XY "))
            .execute()
    })
    .unwrap();
    assert_eq!(
        name_and_revision(&mut t.connect(), "a_items", 1),
        ("xy".to_string(), 1)
    );
    converges(&t, &replica, "a_items");
}

/// Waits until a statement starting with `sql` waits on a lock in the test's database.
pub(super) fn wait_until_blocked(control: &mut Db, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = cqrs::db::SqlConn::load_text(
            control,
            "SELECT CAST(count(*) AS TEXT) AS j FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE $1",
            vec![cqrs::value::SqlValue::Text(format!("{sql}%"))],
        )
        .unwrap();
        if n[0] != "0" {
            return;
        }
        assert!(Instant::now() < deadline, "`{sql}` never waited on a lock");
        thread::sleep(Duration::from_millis(10));
    }
}

/// T1 deletes key 7 in a statement held open (an application trigger waits on an advisory lock
/// the test holds); T2 inserts key 7 meanwhile and waits for T1; T1 commits, then T2. The
/// replica must end with T2's row: the new row's stamp is later than the DELETE's.
#[test]
fn a_key_recreated_by_a_concurrent_transaction_reaches_the_replica() {
    for table in ["t_items", "a_items"] {
        let t = master_db();
        let replica = Replica::new();
        let mut control = t.connect();
        control
            .batch_execute(&format!(
                "INSERT INTO {table} (id, name) VALUES (7, 'first');
                 CREATE FUNCTION gate() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$;
                 CREATE TRIGGER gate AFTER DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION gate();"
            ))
            .unwrap();
        if table == "a_items" {
            // The row above was written outside capture: announce it.
            atomic(&mut control, |tx| tx.sync::<AItem>(&7, None)).unwrap();
        }
        converges(&t, &replica, table);
        thread::scope(|s| {
            // Held by a connection of its own: released when it is dropped, also by a failing
            // assertion (the threads below would wait for ever).
            let mut gate = t.connect();
            gate.batch_execute("SELECT pg_advisory_lock(4242)").unwrap();
            let delete = s.spawn(|| {
                let mut conn = pg(&t);
                if table == "t_items" {
                    diesel::sql_query("DELETE FROM t_items WHERE id = 7")
                        .execute(&mut conn)
                        .unwrap();
                } else {
                    atomic(&mut conn, |tx| tx.delete(a_items::table.find(7)).execute()).unwrap();
                }
            });
            wait_until_blocked(&mut control, "DELETE FROM");
            let insert = s.spawn(|| {
                let mut conn = pg(&t);
                if table == "t_items" {
                    diesel::sql_query("INSERT INTO t_items (id, name) VALUES (7, 'second')")
                        .execute(&mut conn)
                        .unwrap();
                } else {
                    atomic(&mut conn, |tx| {
                        tx.insert_into(a_items::table)
                            .values((
                                a_items::id.eq(7),
                                a_items::name.eq("second"),
                                a_items::secret.eq(""),
                            ))
                            .execute()
                    })
                    .unwrap();
                }
            });
            wait_until_blocked(&mut control, "INSERT INTO");
            drop(gate);
            delete.join().unwrap();
            insert.join().unwrap();
        });
        assert_eq!(name_and_revision(&mut control, table, 7).0, "second");
        converges(&t, &replica, table);
    }
}

/// A key deleted and inserted again in one statement (a writable CTE) or one transaction is, to
/// the replicas, an update at the next revision; a key created and deleted, then inserted
/// again, is a create.
#[test]
fn a_key_deleted_and_inserted_again_in_one_transaction_is_sent() {
    let t = master_db();
    let replica = Replica::new();
    let mut db = t.connect();
    db.batch_execute("INSERT INTO t_items (id, name, value) VALUES (7, 'old', 1), (8, 'old', 1)")
        .unwrap();
    db.batch_execute("UPDATE t_items SET value = 2 WHERE id = 7")
        .unwrap();
    converges(&t, &replica, "t_items");
    db.batch_execute(
        "WITH d AS (DELETE FROM t_items WHERE id = 7 RETURNING id)
         INSERT INTO t_items (id, name, value) SELECT id, 'reborn', 70 FROM d",
    )
    .unwrap();
    assert_eq!(
        name_and_revision(&mut db, "t_items", 7),
        ("reborn".to_string(), 2)
    );
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(
        serde_json::json!(msgs[0].previous_data),
        serde_json::json!({"value": 2}),
        "tracked values from before the transaction"
    );
    converges(&t, &replica, "t_items");
    db.batch_execute(
        "BEGIN;
         DELETE FROM t_items WHERE id = 8;
         INSERT INTO t_items (id, name) VALUES (8, 'again');
         UPDATE t_items SET value = 80 WHERE id = 8;
         INSERT INTO t_items (id, name) VALUES (9, 'brief');
         DELETE FROM t_items WHERE id = 9;
         INSERT INTO t_items (id, name) VALUES (9, 'kept');
         COMMIT;",
    )
    .unwrap();
    assert_eq!(name_and_revision(&mut db, "t_items", 8).1, 1);
    assert_eq!(name_and_revision(&mut db, "t_items", 9).1, 0);
    converges(&t, &replica, "t_items");
    // Later changes of the re-created keys go on from there.
    db.batch_execute("UPDATE t_items SET name = 'later' WHERE id IN (7, 8, 9)")
        .unwrap();
    converges(&t, &replica, "t_items");
}

/// A writer whose session prints floats with 15 digits, dates day-first and times in another
/// zone: change detection and bodies do not depend on it.
#[test]
fn bodies_do_not_depend_on_the_writers_session_settings() {
    const SESSION: &str = "SET extra_float_digits = 0; SET DateStyle = 'SQL, DMY'; \
                           SET TimeZone = 'Asia/Kolkata'; SET IntervalStyle = 'sql_standard'";
    let t = master_db();
    let replica = Replica::new();
    let mut db = t.connect();
    db.batch_execute(SESSION).unwrap();
    db.batch_execute(
        "INSERT INTO t_items (id, name, ratio, at, day) VALUES (1, 'f', 0.3, '2024-02-29 10:00:00.5+00', '2024-03-01')",
    )
    .unwrap();
    converges(&t, &replica, "t_items");
    db.batch_execute("UPDATE t_items SET ratio = 0.30000000000000004 WHERE id = 1")
        .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(
        msgs.len(),
        1,
        "a change only the 17th digit shows is a change"
    );
    assert_eq!(
        msgs[0].instance_data["ratio"],
        serde_json::json!(0.30000000000000004)
    );
    converges(&t, &replica, "t_items");

    let t = master_db();
    let replica = Replica::new();
    let mut conn = pg(&t);
    diesel::connection::SimpleConnection::batch_execute(&mut conn, SESSION).unwrap();
    atomic(&mut conn, |tx| {
        tx.insert_into(a_items::table)
            .values((
                a_items::id.eq(1),
                a_items::name.eq("f"),
                a_items::ratio.eq(0.3),
                a_items::secret.eq(""),
            ))
            .execute()?;
        Ok(())
    })
    .unwrap();
    converges(&t, &replica, "a_items");
    // A create's SAVE, written by PostgreSQL in this session.
    atomic(&mut conn, |tx| {
        tx.insert_into(a_items::table)
            .values((
                a_items::id.eq(2),
                a_items::name.eq("g"),
                a_items::ratio.eq(0.30000000000000004),
                a_items::secret.eq(""),
            ))
            .execute()
    })
    .unwrap();
    assert_eq!(
        sent(&mut t.connect()).last().unwrap().instance_data["ratio"],
        serde_json::json!(0.30000000000000004)
    );
    atomic(&mut conn, |tx| {
        tx.update(a_items::table.find(1))
            .set(a_items::ratio.eq(0.30000000000000004))
            .execute()
    })
    .unwrap();
    let msgs = sent(&mut t.connect());
    assert_eq!(
        msgs.last().unwrap().instance_data["ratio"],
        serde_json::json!(0.30000000000000004)
    );
    converges(&t, &replica, "a_items");
}

/// A second trigger-captured model of a table is refused: both would stamp its rows, and each
/// install would replace the other's functions.
#[test]
fn a_second_trigger_captured_model_of_a_table_is_refused() {
    let t = master_db();
    let mut db = t.connect();
    let other = cqrs::MasterSpec::new(
        cqrs::TableSpec::new("other_item", "t_items")
            .key("id", ColumnType::BigInt)
            .column(cqrs::ColumnSpec::new("name", ColumnType::Text))
            .build()
            .unwrap(),
    )
    .capture(CaptureMode::Trigger)
    .unwrap();
    let err = triggers::install(&mut db, &other).unwrap_err().to_string();
    assert!(
        err.contains("table t_items is captured by the triggers of model 't_item'"),
        "{err}"
    );
    let problems = triggers::check(&mut db, &other).unwrap();
    assert!(
        problems.iter().any(|p| p.contains("model 't_item'")),
        "{problems:?}"
    );
    assert!(triggers::uninstall(&mut db, &other).is_err());
    assert!(
        triggers::check(&mut db, &TItem::master_spec())
            .unwrap()
            .is_empty()
    );
    // Reinstalling the model itself is fine.
    triggers::install(&mut db, &TItem::master_spec()).unwrap();
}

/// An application BEFORE row trigger whose name sorts after the stamp would change rows after
/// the stamp decided: install, check and a captured write refuse it, naming it; renamed to sort
/// before, its change is captured.
#[test]
fn a_before_trigger_firing_after_the_stamp_is_refused() {
    let t = master_db();
    let mut db = t.connect();
    db.batch_execute(
        "INSERT INTO t_items (id, name) VALUES (1, 'a');
         CREATE FUNCTION app_touch() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN NEW.value := NEW.value + 1; RETURN NEW; END $$;
         CREATE TRIGGER zzz_touch BEFORE UPDATE ON t_items FOR EACH ROW EXECUTE FUNCTION app_touch();",
    )
    .unwrap();
    let spec = TItem::master_spec();
    let err = triggers::install(&mut db, &spec).unwrap_err().to_string();
    assert!(
        err.contains("BEFORE row trigger(s) zzz_touch firing after zz_cqrs_t_items_stamp"),
        "{err}"
    );
    let problems = triggers::check(&mut db, &spec).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("zzz_touch"), "{problems:?}");
    let mut conn = pg(&t);
    let err = atomic(&mut conn, |tx| {
        tx.update(t_items::table.find(1))
            .set(t_items::name.eq("b"))
            .execute()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("zzz_touch"), "{err}");

    db.batch_execute("ALTER TRIGGER zzz_touch ON t_items RENAME TO app_touch")
        .unwrap();
    assert!(triggers::check(&mut db, &spec).unwrap().is_empty());
    db.execute("DELETE FROM cqrs_outbox", vec![]).unwrap();
    db.batch_execute("UPDATE t_items SET name = name WHERE id = 1")
        .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 1, "the trigger's own change is captured");
    assert_eq!(
        (msgs[0].revision().unwrap(), &msgs[0].instance_data["value"]),
        (1, &serde_json::json!(1))
    );
}

/// With trigger capture `tx.update` and `tx.delete` are Diesel's own statements: a filter on the
/// revision (optimistic locking) means what it says.
#[test]
fn trigger_captured_statements_filter_as_diesel_does() {
    let t = master_db();
    let mut db = t.connect();
    db.batch_execute("INSERT INTO t_items (id, name) VALUES (1, 'a'), (2, 'b')")
        .unwrap();
    let mut conn = pg(&t);
    let (current, stale, gone) = atomic(&mut conn, |tx| {
        let current = tx
            .update(t_items::table.find(1).filter(t_items::cqrs_revision.eq(0)))
            .set(t_items::value.eq(5))
            .returning(t_items::cqrs_revision)
            .get_result::<i32>()?;
        let stale = tx
            .update(t_items::table.find(2).filter(t_items::cqrs_revision.eq(7)))
            .set(t_items::value.eq(5))
            .execute()?;
        let gone = tx
            .delete(t_items::table.filter(t_items::cqrs_revision.eq(1)))
            .execute()?;
        Ok((current, stale, gone))
    })
    .unwrap();
    assert_eq!((current, stale, gone), (1, 0, 1));
    let msgs = sent(&mut db);
    let got: Vec<_> = msgs
        .iter()
        .map(|m| {
            (
                m.signal_type.as_str(),
                m.instance_pk.clone(),
                m.revision().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("SAVE", serde_json::json!(1), 0),
            ("SAVE", serde_json::json!(2), 0),
            ("DELETE", serde_json::json!(1), 1)
        ]
    );
}

/// Writes no trigger saw (`TRUNCATE` with the triggers disabled, a session with
/// `session_replication_role = replica`, a restore) are repaired by the deleted-rows pipeline
/// (rows the master no longer has) then the diff pipeline (rows whose revision differs, among
/// them keys inserted again at revision 0 below the replica's): README "Trigger capture".
#[test]
fn writes_no_trigger_saw_are_repaired_by_the_two_pipelines() {
    use cqrs::ops::diff;
    use std::io::Cursor;
    let t = master_db();
    let replica = Replica::new();
    let mut db = t.connect();
    db.batch_execute("INSERT INTO t_items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .unwrap();
    db.batch_execute("UPDATE t_items SET value = 5").unwrap();
    converges(&t, &replica, "t_items");
    db.batch_execute(
        "BEGIN;
         SET LOCAL session_replication_role = replica;
         TRUNCATE t_items;
         INSERT INTO t_items (id, name) VALUES (2, 'b again'), (4, 'new');
         COMMIT;",
    )
    .unwrap();
    replica.follow(&t);
    assert_ne!(replica.read_copy(), replica.read(&t, "t_items"), "drifted");

    let registry = cqrs::Registry::new()
        .master::<TItem>()
        .replica::<super::triggers::RItem>();
    let (mut master, mut copy) = (t.connect(), replica.db.connect());
    // Rows the master no longer has: replica -> master -> replica.
    let mut listed = Vec::new();
    diff::deleted_diff_replica(&mut copy, &registry, "t_item", 100, &mut listed).unwrap();
    let mut gone = Vec::new();
    diff::deleted_diff_master(&mut master, &registry, &mut Cursor::new(listed), &mut gone).unwrap();
    assert_eq!(
        diff::deleted_sync_replica(&mut copy, &registry, &mut Cursor::new(gone)).unwrap(),
        2,
        "keys 1 and 3"
    );
    // Revisions that differ: master -> replica -> master (directed SYNCs) -> the replica.
    let mut revisions = Vec::new();
    diff::diff_master(
        &mut master,
        &TItem::master_spec(),
        None,
        diff::Compare::Revision,
        100,
        &mut revisions,
    )
    .unwrap();
    let mut differing = Vec::new();
    diff::diff_replica(
        &mut copy,
        &registry,
        "r",
        &mut Cursor::new(revisions),
        &mut differing,
    )
    .unwrap();
    let (_, _, synced) = diff::diff_sync(
        &mut master,
        &registry,
        &mut Cursor::new(differing),
        &mut |_| {},
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(
        synced, 2,
        "key 2 (revision 0 below the replica's 1) and key 4"
    );
    converges(&t, &replica, "t_items");
    // Captured changes go on from there.
    db.batch_execute("UPDATE t_items SET value = 9 WHERE id = 2; DELETE FROM t_items WHERE id = 4")
        .unwrap();
    converges(&t, &replica, "t_items");
}

/// A key deleted and inserted again while the application's trigger writes back to the new row,
/// then deleted once more: the replicas get the DELETE. An insert of a deleted key that
/// `ON CONFLICT DO NOTHING` skips (another unique column) leaves the DELETE as it was.
#[test]
fn a_recreated_key_keeps_its_history_through_nested_writes_and_skipped_inserts() {
    let t = master_db();
    let replica = Replica::new();
    let mut db = t.connect();
    db.batch_execute("INSERT INTO t_items (id, name) VALUES (1, 'a'), (2, 'b'), (8, 'h')")
        .unwrap();
    converges(&t, &replica, "t_items");
    write_back_triggers(&mut db, "t_items");
    db.batch_execute(
        "BEGIN;
         DELETE FROM t_items WHERE id = 8;
         INSERT INTO t_items (id, name) VALUES (8, 'X');
         DELETE FROM t_items WHERE id = 8;
         COMMIT;",
    )
    .unwrap();
    converges(&t, &replica, "t_items");
    db.batch_execute(
        "CREATE UNIQUE INDEX t_items_name ON t_items (name);
         BEGIN;
         DELETE FROM t_items WHERE id = 1;
         INSERT INTO t_items (id, name) VALUES (1, 'b') ON CONFLICT DO NOTHING;
         COMMIT;",
    )
    .unwrap();
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].signal_type, cqrs::SignalType::Delete);
    converges(&t, &replica, "t_items");
}
