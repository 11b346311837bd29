//! Captured writes in Diesel's vocabulary (`tx.insert_into`, `tx.update`, `tx.delete`) on the
//! application's own `PgConnection` / `SqliteConnection`: the messages they leave in the outbox
//! keep every capture rule (ARCHITECTURE.md §4), asserted on the outbox rows and the table.

use cqrs::{Db, SignalType, atomic};
use cqrs_tests::*;
use diesel::prelude::*;
use serde_json::json;

/// The table and its models, declared once per backend as an application's schema would be
/// (`cqrs_updated` is `Timestamptz` on PostgreSQL, `TimestamptzSqlite` on SQLite).
macro_rules! schema {
    ($updated:ident) => {
        use chrono::{DateTime, Utc};
        use diesel::prelude::*;

        diesel::table! {
            s_items (id) {
                id -> BigInt,
                name -> Text,
                value -> BigInt,
                owner_id -> Nullable<BigInt>,
                cqrs_revision -> Integer,
                cqrs_updated -> $updated,
            }
        }

        #[allow(dead_code)]
        #[derive(Debug, Clone, PartialEq, Queryable, Selectable, cqrs::Master)]
        #[diesel(table_name = s_items)]
        #[cqrs(id = "s_item")]
        pub struct SItem {
            pub id: i64,
            pub name: String,
            #[cqrs(track)]
            pub value: i64,
            #[cqrs(rename = "owner")]
            pub owner_id: Option<i64>,
            pub cqrs_revision: i32,
            pub cqrs_updated: DateTime<Utc>,
        }

        /// A changeset with the bookkeeping columns, as an application's struct often has.
        #[derive(AsChangeset)]
        #[diesel(table_name = s_items)]
        pub struct SItemChanges {
            pub value: i64,
            pub cqrs_revision: i32,
            pub cqrs_updated: DateTime<Utc>,
        }

        #[derive(Insertable)]
        #[diesel(table_name = s_items)]
        pub struct NewSItem<'a> {
            pub name: &'a str,
            pub value: i64,
        }
    };
}

mod pg {
    schema!(Timestamptz);
}

mod lite {
    schema!(TimestamptzSqlite);
}

fn create_table(db: &mut Db) {
    let sql = match db {
        Db::Pg(_) => {
            "CREATE TABLE s_items (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, value BIGINT NOT NULL,
             owner_id BIGINT, cqrs_revision INTEGER NOT NULL DEFAULT 0,
             cqrs_updated TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"
        }
        Db::Sqlite(_) => {
            "CREATE TABLE s_items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
             value BIGINT NOT NULL, owner_id BIGINT, cqrs_revision INTEGER NOT NULL DEFAULT 0,
             cqrs_updated TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')))"
        }
    };
    db.execute(sql, vec![]).unwrap();
}

/// Revision and value of every row, by name.
fn table_state(db: &mut Db) -> Vec<(String, i32, i64)> {
    let rows = cqrs::db::SqlConn::load_text(
        db,
        "SELECT name || ':' || CAST(cqrs_revision AS TEXT) || ':' || CAST(value AS TEXT) AS j FROM s_items ORDER BY name",
        vec![],
    )
    .unwrap();
    rows.iter()
        .map(|r| {
            let p: Vec<&str> = r.split(':').collect();
            (
                p[0].to_string(),
                p[1].parse().unwrap(),
                p[2].parse().unwrap(),
            )
        })
        .collect()
}

/// (signal, name, revision, value, previous_data) of each outbox message, in order.
fn sent(
    db: &mut Db,
) -> Vec<(
    SignalType,
    String,
    i32,
    serde_json::Value,
    serde_json::Value,
)> {
    outbox_messages(db)
        .into_iter()
        .map(|m| {
            (
                m.signal_type,
                m.instance_data
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_string(),
                m.revision().unwrap(),
                m.instance_data
                    .get("value")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
                json!(m.previous_data),
            )
        })
        .collect()
}

/// Run `$body` with `$conn` bound to the Diesel connection inside `$db` (the same body compiled
/// for each backend).
macro_rules! with_diesel {
    ($db:expr, |$conn:ident| $body:block) => {
        match $db {
            Db::Pg($conn) => {
                #[allow(unused_imports)]
                use pg::*;
                $body
            }
            Db::Sqlite($conn) => {
                #[allow(unused_imports)]
                use lite::*;
                $body
            }
        }
    };
}

both!(
    fn diesel_statements_keep_the_capture_rules(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        create_table(&mut db);
        let a = with_diesel!(&mut db, |conn| {
            // Inserts: one row returning its key, a batch, and a batch returning columns.
            let a = atomic(conn, |tx| {
                let a: i64 = tx
                    .insert_into(s_items::table)
                    .values(&NewSItem {
                        name: "a",
                        value: 1,
                    })
                    .returning(s_items::id)
                    .get_result()?;
                let n = tx
                    .insert_into(s_items::table)
                    .values(&vec![
                        NewSItem {
                            name: "b",
                            value: 1,
                        },
                        NewSItem {
                            name: "c",
                            value: 2,
                        },
                        NewSItem {
                            name: "d",
                            value: 3,
                        },
                    ])
                    .execute()?;
                assert_eq!(n, 3);
                let e: Vec<(i64, String)> = tx
                    .insert_into(s_items::table)
                    .values((s_items::name.eq("e"), s_items::value.eq(5)))
                    .returning((s_items::id, s_items::name))
                    .get_results()?;
                assert_eq!(e[0].1, "e");
                Ok(a)
            })
            .unwrap();
            // Updates by key (twice: one bump) and by filter, deletes by key and by filter, a row
            // created and deleted in the transaction, statements that match nothing.
            atomic(conn, |tx| {
                let one = tx
                    .update(s_items::table.find(a))
                    .set(s_items::value.eq(10))
                    .execute()?;
                let again = tx
                    .update(s_items::table.find(a))
                    .set(s_items::value.eq(11))
                    .execute()?;
                assert_eq!((one, again), (1, 1));
                let bulk = tx
                    .update(s_items::table.filter(s_items::name.eq_any(["b", "c"])))
                    .set((s_items::value.eq(0), s_items::owner_id.eq(Some(a))))
                    .execute()?;
                assert_eq!(bulk, 2);
                let none = tx
                    .update(s_items::table.filter(s_items::value.gt(1000)))
                    .set(s_items::value.eq(0))
                    .execute()?;
                assert_eq!(none, 0);
                let d = tx
                    .delete(s_items::table.filter(s_items::name.eq("d")))
                    .execute()?;
                let e = tx
                    .delete(s_items::table.filter(s_items::name.eq("e")))
                    .execute()?;
                assert_eq!((d, e), (1, 1));
                let f: i64 = tx
                    .insert_into(s_items::table)
                    .values(&NewSItem {
                        name: "f",
                        value: 6,
                    })
                    .returning(s_items::id)
                    .get_result()?;
                tx.update(s_items::table.find(f))
                    .set(s_items::value.eq(7))
                    .execute()?;
                assert_eq!(tx.delete(s_items::table.find(f)).execute()?, 1);
                assert_eq!(tx.delete(s_items::table.find(f)).execute()?, 0);
                Ok(())
            })
            .unwrap();
            a
        });
        let msgs = sent(&mut db);
        let (save, delete) = (SignalType::Save, SignalType::Delete);
        let no_prev = json!({"value": null});
        assert_eq!(
            msgs[..5],
            [
                (save, "a".into(), 0, json!(1), no_prev.clone()),
                (save, "b".into(), 0, json!(1), no_prev.clone()),
                (save, "c".into(), 0, json!(2), no_prev.clone()),
                (save, "d".into(), 0, json!(3), no_prev.clone()),
                (save, "e".into(), 0, json!(5), no_prev.clone()),
            ]
        );
        // One message per touched row with its final state; the DELETEs carry the last
        // published revision + 1; nothing for f.
        let mut second = msgs[5..].to_vec();
        second.sort_by(|x, y| x.1.cmp(&y.1));
        assert_eq!(
            second,
            [
                (delete, "".into(), 1, serde_json::Value::Null, json!(null)),
                (delete, "".into(), 1, serde_json::Value::Null, json!(null)),
                (save, "a".into(), 1, json!(11), json!({"value": 1})),
                (save, "b".into(), 1, json!(0), json!({"value": 1})),
                (save, "c".into(), 1, json!(0), json!({"value": 2})),
            ]
        );
        let deleted: Vec<_> = outbox_messages(&mut db)
            .into_iter()
            .filter(|m| m.signal_type == delete)
            .map(|m| m.instance_pk)
            .collect();
        assert_eq!(deleted, [json!(a + 3), json!(a + 4)], "d and e");
        let owners: Vec<_> = outbox_messages(&mut db)
            .into_iter()
            .filter(|m| m.instance_data.get("name") == Some(&json!("b")))
            .map(|m| m.instance_data["owner"].clone())
            .collect();
        assert_eq!(owners, [json!(null), json!(1)], "renamed column, new state");
        assert_eq!(
            table_state(&mut db),
            [
                ("a".to_string(), 1, 11),
                ("b".to_string(), 1, 0),
                ("c".to_string(), 1, 0)
            ]
        );
    }
);

both!(
    fn a_failed_diesel_statement_rolls_back_its_capture(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        create_table(&mut db);
        with_diesel!(&mut db, |conn| {
            atomic(conn, |tx| {
                tx.insert_into(s_items::table)
                    .values(&NewSItem {
                        name: "a",
                        value: 1,
                    })
                    .execute()
            })
            .unwrap();
            // The savepoint's last insert fails (NOT NULL): its inserts and touches are undone
            // with it, and the outer transaction commits what it did before.
            atomic(conn, |tx| {
                tx.update(s_items::table)
                    .set(s_items::value.eq(2))
                    .execute()?;
                let failed = tx.savepoint(|tx| {
                    tx.insert_into(s_items::table)
                        .values(&NewSItem {
                            name: "b",
                            value: 9,
                        })
                        .execute()?;
                    tx.update(s_items::table)
                        .set(s_items::value.eq(3))
                        .execute()?;
                    // No name: NOT NULL refuses it.
                    tx.insert_into(s_items::table)
                        .values(s_items::value.eq(4))
                        .execute()
                });
                assert!(failed.is_err());
                Ok(())
            })
            .unwrap();
        });
        let msgs = sent(&mut db);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert_eq!(
            (msgs[1].0, msgs[1].1.as_str(), msgs[1].2, msgs[1].3.clone()),
            (SignalType::Save, "a", 1, json!(2))
        );
        assert_eq!(table_state(&mut db), [("a".to_string(), 1, 2)]);
    }
);

/// What Diesel returns for an insert without `returning` is the whole row: the same here.
#[test]
fn insert_returns_whole_rows_as_diesel_does() {
    use pg::*;
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    create_table(&mut db);
    let Db::Pg(conn) = &mut db else {
        unreachable!()
    };
    let (one, many, selected) = atomic(conn, |tx| {
        let one: SItem = tx
            .insert_into(s_items::table)
            .values(&NewSItem {
                name: "a",
                value: 1,
            })
            .get_result()?;
        let many: Vec<SItem> = tx
            .insert_into(s_items::table)
            .values(&vec![
                NewSItem {
                    name: "b",
                    value: 2,
                },
                NewSItem {
                    name: "c",
                    value: 3,
                },
            ])
            .get_results()?;
        let selected: SItem = tx
            .insert_into(s_items::table)
            .values(&NewSItem {
                name: "d",
                value: 4,
            })
            .returning(SItem::as_returning())
            .get_result()?;
        Ok((one, many, selected))
    })
    .unwrap();
    assert_eq!(
        (one.name.as_str(), one.value, one.cqrs_revision),
        ("a", 1, 0)
    );
    assert_eq!(many.iter().map(|r| r.value).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(selected.name, "d");
    let msgs = outbox_messages(&mut db);
    assert_eq!(
        msgs.iter()
            .map(|m| m.instance_pk.clone())
            .collect::<Vec<_>>(),
        [one.id, many[0].id, many[1].id, selected.id].map(|id| json!(id))
    );
}

both!(
    /// An update's filter is judged on the rows as they are when the update runs, not after
    /// capture touched them: a filter on the revision (optimistic locking) or on `cqrs_updated`
    /// changes the row it names, a stale one changes nothing and sends nothing; Diesel's own
    /// results come back (`get_result`, `get_results`, `returning`).
    fn an_update_filtering_on_what_capture_changes_keeps_its_meaning(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        create_table(&mut db);
        with_diesel!(&mut db, |conn| {
            let a: SItem = atomic(conn, |tx| {
                tx.insert_into(s_items::table)
                    .values(&NewSItem {
                        name: "a",
                        value: 1,
                    })
                    .get_result()
            })
            .unwrap();
            // Optimistic locking: the revision the application read.
            let updated: SItem = atomic(conn, |tx| {
                tx.update(
                    s_items::table
                        .find(a.id)
                        .filter(s_items::cqrs_revision.eq(a.cqrs_revision)),
                )
                .set(s_items::value.eq(5))
                .get_result()
            })
            .unwrap();
            assert_eq!((updated.value, updated.cqrs_revision), (5, 1));
            let stale = atomic(conn, |tx| {
                tx.update(
                    s_items::table
                        .find(a.id)
                        .filter(s_items::cqrs_revision.eq(a.cqrs_revision)),
                )
                .set(s_items::value.eq(6))
                .execute()
            })
            .unwrap();
            assert_eq!(stale, 0, "a stale revision matches nothing");
            // "Rows not changed since": a filter on cqrs_updated, then on the revision again in
            // the same transaction (the row changed once: still one bump).
            let (names, again): (Vec<String>, usize) = atomic(conn, |tx| {
                let names = tx
                    .update(s_items::table.filter(s_items::cqrs_updated.le(updated.cqrs_updated)))
                    .set(s_items::value.eq(7))
                    .returning(s_items::name)
                    .get_results()?;
                let again = tx
                    .update(s_items::table.filter(s_items::cqrs_revision.eq(2)))
                    .set(s_items::value.eq(8))
                    .execute()?;
                Ok((names, again))
            })
            .unwrap();
            assert_eq!((names, again), (vec!["a".to_string()], 1));
        });
        let msgs = sent(&mut db);
        let got: Vec<_> = msgs
            .iter()
            .map(|m| (m.2, m.3.clone(), m.4.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (0, json!(1), json!({"value": null})),
                (1, json!(5), json!({"value": 1})),
                (2, json!(8), json!({"value": 5})),
            ],
            "nothing for the stale update"
        );
        assert_eq!(table_state(&mut db), [("a".to_string(), 2, 8)]);
    }
);

/// The application's own BEFORE UPDATE trigger maintains `owner_id` (a stand-in for
/// `updated_at = now()`) and counts its firings in `value`: an update filtered on the column it
/// maintains changes the row (the trigger fires for it and for capture's bump).
#[test]
fn an_update_filtering_on_a_column_the_applications_trigger_maintains_changes_the_row() {
    use pg::*;
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    create_table(&mut db);
    db.batch_execute(
        "INSERT INTO s_items (id, name, value, owner_id) VALUES (1, 'old', 0, 10);
         CREATE FUNCTION s_items_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN NEW.owner_id := 99; NEW.value := OLD.value + 1; RETURN NEW; END $$;
         CREATE TRIGGER s_items_stamp BEFORE UPDATE ON s_items FOR EACH ROW EXECUTE FUNCTION s_items_stamp();",
    )
    .unwrap();
    let Db::Pg(conn) = &mut db else {
        unreachable!()
    };
    let archived = atomic(conn, |tx| {
        tx.update(s_items::table.filter(s_items::owner_id.lt(50)))
            .set(s_items::name.eq("archived"))
            .execute()
    })
    .unwrap();
    assert_eq!(archived, 1, "the row the filter names");
    assert_eq!(
        table_state(&mut db),
        [("archived".to_string(), 1, 2)],
        "changed, one revision"
    );
    let msgs = sent(&mut db);
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].1.as_str(), msgs[0].2), ("archived", 1));
}

/// A row that stops matching a delete's (or an update's) filter while the statement waits for
/// its lock is left alone, as Diesel's own statement would leave it: a concurrent rename is not
/// lost, and nothing is sent for the row.
#[test]
fn a_row_that_stops_matching_while_a_statement_waits_is_left_alone() {
    use pg::*;
    for delete in [true, false] {
        let t = TestDb::new(Kind::Postgres);
        let mut db = t.connect();
        create_table(&mut db);
        db.batch_execute("INSERT INTO s_items (id, name, value) VALUES (1, 'x', 1)")
            .unwrap();
        let mut other = t.connect();
        other
            .batch_execute("BEGIN; UPDATE s_items SET name = 'y' WHERE id = 1")
            .unwrap();
        let changed = std::thread::scope(|s| {
            let statement = s.spawn(|| {
                let Db::Pg(mut conn) = t.connect() else {
                    unreachable!()
                };
                atomic(&mut conn, |tx| {
                    if delete {
                        tx.delete(s_items::table.filter(s_items::name.eq("x")))
                            .execute()
                    } else {
                        tx.update(s_items::table.filter(s_items::name.eq("x")))
                            .set(s_items::value.eq(2))
                            .execute()
                    }
                })
                .unwrap()
            });
            super::capture_edges::wait_until_blocked(&mut db, "SELECT");
            other.batch_execute("COMMIT").unwrap();
            statement.join().unwrap()
        });
        assert_eq!(changed, 0, "delete: {delete}");
        assert_eq!(table_state(&mut db), [("y".to_string(), 0, 1)]);
        assert!(sent(&mut db).is_empty(), "{:?}", sent(&mut db));
    }
}

both!(
    /// A nested `atomic` inside the application's own savepoint (`conn.transaction`) that then
    /// rolls back leaves nothing captured: the row it updated is bumped by its next change, the
    /// row it deleted (still there) gets no DELETE; one whose savepoint is released counts.
    fn a_rolled_back_savepoint_of_the_applications_takes_its_nested_capture_with_it(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        create_table(&mut db);
        with_diesel!(&mut db, |conn| {
            let ids: Vec<i64> = atomic(conn, |tx| {
                tx.insert_into(s_items::table)
                    .values(&vec![
                        NewSItem {
                            name: "a",
                            value: 1,
                        },
                        NewSItem {
                            name: "b",
                            value: 1,
                        },
                        NewSItem {
                            name: "c",
                            value: 1,
                        },
                    ])
                    .returning(s_items::id)
                    .get_results()
            })
            .unwrap();
            let (a, b, c) = (ids[0], ids[1], ids[2]);
            atomic(conn, |tx| {
                let rolled_back = tx.conn().transaction(|conn| {
                    atomic(conn, |tx| {
                        tx.update(s_items::table.find(a))
                            .set(s_items::value.eq(50))
                            .execute()?;
                        tx.delete(s_items::table.find(b)).execute()
                    })
                    .map_err(|_| diesel::result::Error::NotFound)?;
                    Err::<(), _>(diesel::result::Error::RollbackTransaction)
                });
                assert!(rolled_back.is_err());
                tx.update(s_items::table.find(a))
                    .set(s_items::value.eq(60))
                    .execute()?;
                tx.conn()
                    .transaction(|conn| {
                        atomic(conn, |tx| {
                            tx.update(s_items::table.find(c))
                                .set(s_items::value.eq(70))
                                .execute()
                        })
                        .map_err(|_| diesel::result::Error::NotFound)
                    })
                    .map_err(cqrs::Error::from)?;
                tx.update(s_items::table.find(c))
                    .set(s_items::value.eq(71))
                    .execute()
            })
            .unwrap();
        });
        let msgs = sent(&mut db);
        let got: Vec<_> = msgs[3..]
            .iter()
            .map(|m| (m.0, m.1.clone(), m.2, m.3.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (SignalType::Save, "a".to_string(), 1, json!(60)),
                (SignalType::Save, "c".to_string(), 1, json!(71)),
            ]
        );
        assert_eq!(
            table_state(&mut db),
            [
                ("a".to_string(), 1, 60),
                ("b".to_string(), 0, 1),
                ("c".to_string(), 1, 71)
            ]
        );
    }
);

/// The application's own error, returned from inside `atomic`.
#[derive(Debug, PartialEq)]
struct OutOfStock(i64);

impl std::fmt::Display for OutOfStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "product {} is out of stock", self.0)
    }
}

impl std::error::Error for OutOfStock {}

both!(
    /// `atomic` aborted with the application's own error: everything rolls back, nothing is
    /// sent, and the caller gets its error back by type.
    fn an_application_error_rolls_atomic_back_and_comes_back_by_type(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        create_table(&mut db);
        let err = with_diesel!(&mut db, |conn| {
            atomic(conn, |tx| {
                let id: i64 = tx
                    .insert_into(s_items::table)
                    .values(&NewSItem {
                        name: "a",
                        value: 0,
                    })
                    .returning(s_items::id)
                    .get_result()?;
                Err::<(), _>(cqrs::Error::application(OutOfStock(id)))
            })
            .unwrap_err()
        });
        assert_eq!(err.kind(), cqrs::ErrorKind::Application);
        assert!(err.to_string().contains("out of stock"), "{err}");
        assert!(err.into_application_error::<OutOfStock>().is_ok());
        assert!(table_state(&mut db).is_empty(), "rolled back");
        assert!(sent(&mut db).is_empty(), "nothing sent");
    }
);

both!(
    /// An update whose changeset carries the revision and `cqrs_updated` the application read
    /// (a struct changeset): capture's revision is the one stored and sent, in the statement
    /// that changes a row first and in later ones.
    fn a_changeset_with_the_bookkeeping_columns_keeps_captures_revision(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        create_table(&mut db);
        with_diesel!(&mut db, |conn| {
            let item: SItem = atomic(conn, |tx| {
                tx.insert_into(s_items::table)
                    .values(&NewSItem {
                        name: "a",
                        value: 1,
                    })
                    .get_result()
            })
            .unwrap();
            let stale = |value| SItemChanges {
                value,
                cqrs_revision: item.cqrs_revision,
                cqrs_updated: item.cqrs_updated,
            };
            atomic(conn, |tx| {
                tx.update(s_items::table.find(item.id))
                    .set(&stale(2))
                    .execute()?;
                tx.update(s_items::table.find(item.id))
                    .set(&stale(3))
                    .execute()
            })
            .unwrap();
        });
        assert_eq!(table_state(&mut db), [("a".to_string(), 1, 3)]);
        let msgs = sent(&mut db);
        assert_eq!(
            msgs.iter().map(|m| (m.2, m.3.clone())).collect::<Vec<_>>(),
            [(0, json!(1)), (1, json!(3))]
        );
    }
);

/// A PostgreSQL database with the items table: the test's handle, a `Db` on it and the Diesel
/// connection the test writes through.
fn pg_items() -> (TestDb, Db, PgConnection) {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    create_table(&mut db);
    let conn = PgConnection::establish(&t.url).unwrap();
    (t, db, conn)
}

/// The statements a connection sends, prepares included (each is a round trip to the server).
fn trace_round_trips(conn: &mut PgConnection) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use diesel::connection::{Instrumentation, InstrumentationEvent};
    let trips = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = trips.clone();
    let trace = move |event: InstrumentationEvent<'_>| match event {
        InstrumentationEvent::StartQuery { query, .. } => {
            seen.lock().unwrap().push(query.to_string());
        }
        InstrumentationEvent::CacheQuery { sql, .. } => {
            seen.lock().unwrap().push(format!("(prepare) {sql}"));
        }
        _ => {}
    };
    let trace: Box<dyn Instrumentation> = Box::new(trace);
    conn.set_instrumentation(trace);
    trips
}

/// A captured 1-row create costs the application one round trip more than the same
/// transaction without capture (BEGIN, the INSERT, the statement that writes the SAVE, COMMIT),
/// that statement prepared once per connection; the row and its SAVE carry the same stamp.
#[test]
fn a_captured_create_costs_one_prepared_statement_more_than_the_uncaptured_one() {
    use pg::*;
    let (_t, mut db, mut conn) = pg_items();
    let trips = trace_round_trips(&mut conn);
    let take = || std::mem::take(&mut *trips.lock().unwrap());
    // The second of each: what the first prepared is cached.
    let (mut captured, mut plain) = (Vec::new(), Vec::new());
    for i in 0..2 {
        take();
        atomic(&mut conn, |tx| {
            tx.insert_into(s_items::table)
                .values(&NewSItem {
                    name: &format!("captured {i}"),
                    value: i,
                })
                .execute()
        })
        .unwrap();
        captured = take();
        conn.transaction(|c| {
            diesel::insert_into(s_items::table)
                .values(&NewSItem {
                    name: &format!("plain {i}"),
                    value: i,
                })
                .execute(c)
        })
        .unwrap();
        plain = take();
    }
    assert_eq!(plain.len(), 3, "{plain:#?}");
    assert_eq!(captured.len(), plain.len() + 1, "{captured:#?}");
    assert!(
        captured.iter().all(|q| !q.starts_with("(prepare)")),
        "{captured:#?}"
    );
    let msgs = sent(&mut db);
    assert_eq!(
        msgs.iter().map(|m| (m.1.as_str(), m.2)).collect::<Vec<_>>(),
        [("captured 0", 0), ("captured 1", 0)]
    );
    // The stored row carries the stamp its SAVE carries.
    let stamps = cqrs::db::SqlConn::load_text(
        &mut db,
        "SELECT CAST(i.cqrs_updated = CAST(o.body::jsonb #>> '{instance_data,cqrs_updated}' AS timestamptz) AS TEXT) AS j \
         FROM s_items i JOIN cqrs_outbox o ON o.pk = CAST(i.id AS TEXT) ORDER BY i.id",
        vec![],
    )
    .unwrap();
    assert_eq!(stamps, ["true", "true"]);
}

/// Creates told with `created` beside Diesel inserts, a large insert, and a transaction that
/// also updates: every row sent once, in order; a created row re-keyed outside capture fails
/// the commit.
#[test]
fn created_rows_are_sent_once_in_order_and_a_row_gone_at_commit_fails_it() {
    use pg::*;
    let (_t, mut db, mut conn) = pg_items();
    atomic(&mut conn, |tx| {
        tx.insert_into(s_items::table)
            .values(&NewSItem {
                name: "a",
                value: 1,
            })
            .execute()?;
        let id: i64 = diesel::insert_into(s_items::table)
            .values(&NewSItem {
                name: "b",
                value: 2,
            })
            .returning(s_items::id)
            .get_result(tx.conn())?;
        tx.created::<SItem>(&id)
    })
    .unwrap();
    assert_eq!(
        sent(&mut db)
            .iter()
            .map(|m| m.1.clone())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    // 2,000 rows in one INSERT.
    let names: Vec<String> = (0..2000).map(|i| format!("bulk {i:04}")).collect();
    let rows: Vec<NewSItem> = names
        .iter()
        .map(|n| NewSItem { name: n, value: 7 })
        .collect();
    atomic(&mut conn, |tx| {
        tx.insert_into(s_items::table).values(&rows).execute()
    })
    .unwrap();
    let bulk: Vec<String> = sent(&mut db).into_iter().skip(2).map(|m| m.1).collect();
    assert_eq!(bulk, names, "every row once, in insert order");
    // A create beside an update (the general path).
    atomic(&mut conn, |tx| {
        tx.update(s_items::table.filter(s_items::name.eq("a")))
            .set(s_items::value.eq(10))
            .execute()?;
        tx.insert_into(s_items::table)
            .values(&NewSItem {
                name: "c",
                value: 3,
            })
            .execute()
    })
    .unwrap();
    let last: Vec<_> = sent(&mut db)
        .into_iter()
        .skip(2002)
        .map(|m| (m.1, m.2))
        .collect();
    assert_eq!(last, [("a".to_string(), 1), ("c".to_string(), 0)]);
    // A created row whose key changes outside capture: the transaction does not commit.
    let before = table_state(&mut db).len();
    let err = atomic(&mut conn, |tx| {
        let id: i64 = tx
            .insert_into(s_items::table)
            .values(&NewSItem {
                name: "moved",
                value: 1,
            })
            .returning(s_items::id)
            .get_result()?;
        diesel::sql_query("UPDATE s_items SET id = id + 100000 WHERE id = $1")
            .bind::<diesel::sql_types::BigInt, _>(id)
            .execute(tx.conn())?;
        Ok(())
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("created in this transaction, but 0 exist at commit"),
        "{err}"
    );
    assert_eq!(table_state(&mut db).len(), before, "rolled back");
    assert_eq!(sent(&mut db).len(), 2004);
    // The connection is usable after the refused commit.
    atomic(&mut conn, |tx| {
        tx.insert_into(s_items::table)
            .values(&NewSItem {
                name: "after",
                value: 1,
            })
            .execute()
    })
    .unwrap();
    assert_eq!(sent(&mut db).len(), 2005);
}

/// A create inside a savepoint that rolls back is neither stored nor sent; the transaction's other
/// create is, through the statement PostgreSQL writes the SAVEs with.
#[test]
fn a_create_in_a_rolled_back_savepoint_is_not_sent() {
    use pg::*;
    let (_t, mut db, mut conn) = pg_items();
    atomic(&mut conn, |tx| {
        tx.insert_into(s_items::table)
            .values(&NewSItem {
                name: "kept",
                value: 1,
            })
            .execute()?;
        let abandoned = tx.savepoint(|tx| {
            tx.insert_into(s_items::table)
                .values(&NewSItem {
                    name: "gone",
                    value: 2,
                })
                .execute()?;
            Err::<(), _>(cqrs::Error::config("abandoned"))
        });
        assert!(abandoned.is_err());
        Ok(())
    })
    .unwrap();
    assert_eq!(table_state(&mut db), [("kept".to_string(), 0, 1)]);
    assert_eq!(
        sent(&mut db)
            .iter()
            .map(|m| (m.1.as_str(), m.2))
            .collect::<Vec<_>>(),
        [("kept", 0)]
    );
}
