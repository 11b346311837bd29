//! Every row of the rules table (ARCHITECTURE.md §5) on each backend, plus batch behaviour:
//! deduplication, chunking under the bind limit, absent optional fields, bad rows failing alone.

use cqrs::{BatchReport, Change, Db, Message, Outcome, Replica, TableReplica, TableSpec};
use cqrs_tests::*;
use serde_json::json;

fn apply_changes(db: &mut Db, spec: &TableSpec, changes: Vec<Change>) -> BatchReport {
    let replica = TableReplica::new(spec.clone());
    let refs: Vec<&Change> = changes.iter().collect();
    db.write_transaction(|db| replica.apply(db, &refs))
        .expect("batch applies")
}

fn directed(msg: Message) -> Change {
    Change {
        directed: true,
        ..Change::new(msg)
    }
}

fn outcome_names(r: &BatchReport) -> Vec<String> {
    r.outcomes
        .iter()
        .map(|o| match o {
            Outcome::Applied => "applied".to_string(),
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Failed(e) => format!("failed: {e}"),
        })
        .collect()
}

both!(
    fn save_without_row_or_tombstone_inserts(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let s = ItemState::new(1, 0, at(0));
        let r = apply_items(&mut db, vec![s.save()]);
        assert_eq!(outcome_names(&r), ["applied"]);
        let rows = items(&mut db);
        assert_eq!(rows[&1].rev, 0);
        assert_eq!(rows[&1].name, "n1-0");
        assert_eq!(rows[&1].updated, at(0));
        assert_eq!(
            rows[&1].note, "none",
            "absent optional column takes the database default"
        );
    }
);

both!(
    fn save_newer_updates_with_gap(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        apply_items(&mut db, vec![ItemState::new(1, 0, at(0)).save()]);
        let r = apply_items(&mut db, vec![ItemState::new(1, 3, at(30)).save()]);
        assert_eq!(outcome_names(&r), ["applied"]);
        let row = &items(&mut db)[&1];
        assert_eq!(
            (row.rev, row.name.as_str(), row.updated),
            (3, "n1-3", at(30))
        );
    }
);

both!(
    fn save_equal_or_older_is_skipped(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        apply_items(&mut db, vec![ItemState::new(1, 2, at(20)).save()]);
        let mut dup = ItemState::new(1, 2, at(20));
        dup.name = "changed".into();
        let r = apply_items(
            &mut db,
            vec![dup.save(), ItemState::new(1, 1, at(10)).save()],
        );
        assert_eq!(
            outcome_names(&r),
            ["skipped: duplicate", "skipped: stale revision"]
        );
        let row = &items(&mut db)[&1];
        assert_eq!((row.rev, row.name.as_str()), (2, "n1-2"));
    }
);

both!(
    fn late_save_after_delete_does_not_resurrect(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        apply_items(&mut db, vec![ItemState::new(1, 0, at(0)).save()]);
        apply_items(&mut db, vec![item_delete(1, 2, at(20))]);
        let r = apply_items(&mut db, vec![ItemState::new(1, 1, at(10)).save()]);
        assert_eq!(outcome_names(&r), ["skipped: deleted (tombstone)"]);
        assert!(items(&mut db).is_empty());
        assert_eq!(tombstones(&mut db, "item")["1"], (2, at(20)));
    }
);

both!(
    fn recreated_pk_with_later_updated_is_inserted(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        apply_items(&mut db, vec![item_delete(1, 5, at(50))]);
        let r = apply_items(&mut db, vec![ItemState::new(1, 0, at(60)).save()]);
        assert_eq!(outcome_names(&r), ["applied"]);
        assert_eq!(items(&mut db)[&1].rev, 0);
        assert!(tombstones(&mut db, "item").is_empty(), "tombstone cleared");
    }
);

both!(
    fn broadcast_sync_reapplies_equal_but_never_downgrades(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        apply_items(&mut db, vec![ItemState::new(1, 3, at(30)).save()]);
        let mut same = ItemState::new(1, 3, at(30));
        same.name = "resent".into();
        let r = apply_items(&mut db, vec![same.sync()]);
        assert_eq!(outcome_names(&r), ["applied"]);
        assert_eq!(items(&mut db)[&1].name, "resent");
        let r = apply_items(&mut db, vec![ItemState::new(1, 1, at(10)).sync()]);
        assert_eq!(outcome_names(&r), ["skipped: stale revision"]);
        assert_eq!(items(&mut db)[&1].rev, 3);
    }
);

both!(
    fn directed_sync_downgrades_and_clears_tombstone(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        apply_items(
            &mut db,
            vec![
                ItemState::new(1, 5, at(50)).save(),
                item_delete(2, 9, at(90)),
            ],
        );
        let r = apply_changes(
            &mut db,
            &item_spec(),
            vec![
                directed(ItemState::new(1, 2, at(20)).sync()),
                directed(ItemState::new(2, 1, at(10)).sync()),
            ],
        );
        assert_eq!(outcome_names(&r), ["applied", "applied"]);
        let rows = items(&mut db);
        assert_eq!(
            (rows[&1].rev, rows[&1].name.as_str()),
            (2, "n1-2"),
            "downgraded"
        );
        assert_eq!(rows[&2].rev, 1, "written over the tombstone");
        assert!(tombstones(&mut db, "item").is_empty());
    }
);

both!(
    fn delete_newer_than_row_deletes_and_records_tombstone(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        apply_items(&mut db, vec![ItemState::new(1, 3, at(30)).save()]);
        let r = apply_items(&mut db, vec![item_delete(1, 4, at(40))]);
        assert_eq!(outcome_names(&r), ["applied"]);
        assert!(items(&mut db).is_empty());
        assert_eq!(tombstones(&mut db, "item")["1"], (4, at(40)));
    }
);

both!(
    fn delete_not_newer_than_row_is_skipped(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        apply_items(&mut db, vec![ItemState::new(1, 5, at(50)).save()]);
        let r = apply_items(
            &mut db,
            vec![item_delete(1, 3, at(30)), item_delete(1, 5, at(31))],
        );
        assert_eq!(
            outcome_names(&r),
            [
                "skipped: delete older than the row",
                "skipped: delete older than the row"
            ]
        );
        assert_eq!(items(&mut db)[&1].rev, 5);
        assert!(tombstones(&mut db, "item").is_empty());
    }
);

both!(
    fn delete_without_row_records_tombstone_and_keeps_the_newest(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let r = apply_items(&mut db, vec![item_delete(7, 3, at(30))]);
        assert_eq!(outcome_names(&r), ["applied"]);
        let r = apply_items(&mut db, vec![item_delete(7, 2, at(20))]);
        assert_eq!(outcome_names(&r), ["skipped: duplicate delete"]);
        assert_eq!(tombstones(&mut db, "item")["7"], (3, at(30)));
        assert!(items(&mut db).is_empty());
    }
);

both!(
    fn same_pk_three_times_in_one_batch_applies_the_winner(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let r = apply_items(
            &mut db,
            vec![
                ItemState::new(1, 1, at(10)).save(),
                ItemState::new(1, 3, at(30)).save(),
                ItemState::new(1, 2, at(20)).save(),
                ItemState::new(2, 0, at(0)).save(),
                item_delete(2, 1, at(5)),
                ItemState::new(2, 0, at(0)).save(),
            ],
        );
        assert_eq!(r.stats.upsert_statements, 1, "one multi-row upsert");
        let rows = items(&mut db);
        assert_eq!((rows[&1].rev, rows[&1].name.as_str()), (3, "n1-3"));
        assert!(
            !rows.contains_key(&2),
            "the delete wins over its older saves in any order"
        );
        assert_eq!(tombstones(&mut db, "item")["2"], (1, at(5)));
    }
);

both!(
    fn absent_optional_field_defaults_on_insert_and_is_kept_on_update(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let mut with_note = ItemState::new(1, 0, at(0)).save();
        with_note.instance_data.insert("note".into(), json!("kept"));
        let r = apply_items(&mut db, vec![with_note, ItemState::new(2, 0, at(0)).save()]);
        assert_eq!(
            r.stats.upsert_statements, 2,
            "one statement per set of present columns"
        );
        let r = apply_items(&mut db, vec![ItemState::new(1, 1, at(10)).save()]);
        assert_eq!(outcome_names(&r), ["applied"]);
        let rows = items(&mut db);
        assert_eq!((rows[&1].rev, rows[&1].note.as_str()), (1, "kept"));
        assert_eq!(rows[&2].note, "none");
    }
);

both!(
    fn a_message_with_bad_data_fails_alone(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let mut missing = ItemState::new(2, 0, at(0)).save();
        missing.instance_data.remove("name");
        let mut wrong = ItemState::new(3, 0, at(0)).save();
        wrong.instance_data.insert("value".into(), json!("many"));
        let mut no_rev = ItemState::new(4, 0, at(0)).save();
        no_rev.instance_data.remove("cqrs_revision");
        let r = apply_items(
            &mut db,
            vec![ItemState::new(1, 0, at(0)).save(), missing, wrong, no_rev],
        );
        let names = outcome_names(&r);
        assert_eq!(names[0], "applied");
        assert!(
            names[1].contains("instance_data has no `name`"),
            "{}",
            names[1]
        );
        assert!(
            names[2].contains("instance_data.value: \"many\" is not a valid bigint"),
            "{}",
            names[2]
        );
        assert!(names[3].contains("no `cqrs_revision`"), "{}", names[3]);
        assert_eq!(items(&mut db).keys().copied().collect::<Vec<_>>(), [1]);
    }
);

// PostgreSQL binds a column as one array parameter (one statement for any batch); SQLite binds
// each value and splits a batch under its limit.
both!(
    fn batch_over_the_bind_limit_is_written_whole(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let spec = wide_spec();
        assert_eq!(spec.columns().len(), 9);
        let rows = 20_000usize;
        let changes: Vec<Change> = (0..rows as i64)
        .map(|id| {
            let data = json!({"id": id, "a": id, "b": -id, "c": format!("c{id}"), "d": "d", "e": 7, "f": "ffff",
                "cqrs_revision": 0, "cqrs_updated": "2026-11-23 12:00:00.000001+00:00"});
            Change::new(Message::new(cqrs::SignalType::Save, "wide", json!(id), data.as_object().unwrap().clone()))
        })
        .collect();
        let r = apply_changes(&mut db, &spec, changes);
        let expected = match kind {
            Kind::Postgres => 1,
            Kind::Sqlite => rows.div_ceil(db.backend().bind_limit() / 9), // 3640 rows per statement
        };
        assert_eq!(r.stats.upsert_statements, expected, "{kind:?}");
        assert_eq!(expected, if kind == Kind::Postgres { 1 } else { 6 });
        assert_eq!(r.stats.rows_written, rows);
        assert_eq!(
            count(&mut db, "SELECT count(*) AS n FROM wide"),
            rows as i64
        );
        assert_eq!(
            count(&mut db, "SELECT CAST(sum(a) AS BIGINT) AS n FROM wide"),
            (0..rows as i64).sum::<i64>()
        );
    }
);

both!(
    fn django_captures_01_to_16_apply_as_django_would(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let spec = item_spec();
        for file in capture_files().into_iter().filter(|f| f.as_str() < "20") {
            for (routing_key, body) in capture(&file) {
                let message = Message::decode(&body).unwrap();
                let directed = routing_key.starts_with("cqrs.");
                let r = apply_changes(
                    &mut db,
                    &spec,
                    vec![Change {
                        directed,
                        ..Change::new(message)
                    }],
                );
                assert!(r.outcomes[0].is_final(), "{file}: {:?}", r.outcomes[0]);
            }
        }
        let rows = items(&mut db);
        assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [3, 5, 6]);
        assert_eq!((rows[&5].rev, rows[&6].rev, rows[&3].rev), (1, 1, 0));
        let tombs = tombstones(&mut db, "item");
        assert_eq!(tombs.keys().cloned().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(tombs["1"].0, 4);
    }
);

both!(
    fn django_typed_captures_apply_with_their_value_forms(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let spec = typed_spec(kind);
        for file in [
            "30_typed_create.json",
            "31_typed_update.json",
            "33_typed_create_berlin.json",
            "34_typed_create_string_values.json",
        ] {
            for (_, body) in capture(file) {
                let r = apply_changes(
                    &mut db,
                    &spec,
                    vec![Change::new(Message::decode(&body).unwrap())],
                );
                assert!(
                    matches!(r.outcomes[0], Outcome::Applied),
                    "{file}: {:?}",
                    r.outcomes[0]
                );
            }
        }
        assert_eq!(count(&mut db, "SELECT count(*) AS n FROM typed"), 5);
        let q = |col: &str| {
            format!(
                "SELECT CAST({col} AS TEXT) AS t FROM typed WHERE id = '644c341f-9f37-4ed0-8b71-fc5dc0f5d81e'"
            )
        };
        let price = texts(&mut db, &q("price"))[0].clone().unwrap();
        assert_eq!(price.parse::<f64>().unwrap(), 99.99);
        assert_eq!(texts(&mut db, &q("cqrs_revision"))[0].as_deref(), Some("2"));
        assert_eq!(texts(&mut db, &q("owner_ref"))[0].as_deref(), Some("1004"));
        assert_eq!(
            texts(&mut db, &q("ratio"))[0]
                .as_deref()
                .map(|r| r.parse::<f64>().unwrap()),
            Some(2.5),
            "SYNC of an equal revision re-applied"
        );
        let s34 = |col: &str| {
            format!(
                "SELECT CAST({col} AS TEXT) AS t FROM typed WHERE id = '0b6f4d1c-7d3e-4c2a-9f00-00000000000d'"
            )
        };
        let price34 = texts(&mut db, &s34("price"))[0].clone().unwrap();
        assert_eq!(
            price34.parse::<f64>().unwrap(),
            1234.5,
            "string decimal stored exactly"
        );
        assert_eq!(
            texts(&mut db, &s34("owner_ref"))[0].as_deref(),
            Some("1003"),
            "FK `owner` -> column owner_ref"
        );
        assert_eq!(
            texts(&mut db, &s34("day"))[0].as_deref(),
            Some("2024-02-29")
        );
    }
);

// Every column type goes through the PostgreSQL array binds (and SQLite's values) with NULLs.
both!(
    fn every_column_type_round_trips_through_a_batch(kind: Kind) {
        use cqrs::ColumnSpec;
        use cqrs::value::ColumnType as T;
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let ddl = match kind {
            Kind::Postgres => "CREATE TABLE all_types (id SMALLINT PRIMARY KEY, f REAL, ts TIMESTAMP, j JSON, jb JSONB, i INTEGER, b BOOLEAN,
                cqrs_revision INTEGER NOT NULL, cqrs_updated TIMESTAMPTZ NOT NULL)",
            Kind::Sqlite => "CREATE TABLE all_types (id INTEGER PRIMARY KEY, f REAL, ts TEXT, j TEXT, jb TEXT, i INTEGER, b BOOLEAN,
                cqrs_revision INTEGER NOT NULL, cqrs_updated TEXT NOT NULL)",
        };
        db.batch_execute(ddl).unwrap();
        let spec = TableSpec::new("all_types", "all_types")
            .key("id", T::SmallInt)
            .column(ColumnSpec::new("f", T::Float).nullable())
            .column(ColumnSpec::new("ts", T::Timestamp).nullable())
            .column(ColumnSpec::new("j", T::Json).nullable())
            .column(
                ColumnSpec::new(
                    "jb",
                    if kind == Kind::Postgres {
                        T::Jsonb
                    } else {
                        T::Json
                    },
                )
                .nullable(),
            )
            .column(ColumnSpec::new("i", T::Integer).nullable())
            .column(ColumnSpec::new("b", T::Bool).nullable())
            .build()
            .unwrap();
        let row = |id: i64, full: bool| {
            let v = |x: serde_json::Value| if full { x } else { serde_json::Value::Null };
            let data = json!({"id": id, "f": v(json!(1.5)), "ts": v(json!("2026-11-23 12:00:00.123456")),
                "j": v(json!({"a": [1, "x"]})), "jb": v(json!([true, null])), "i": v(json!(-7)), "b": v(json!(true)),
                "cqrs_revision": 0, "cqrs_updated": "2026-11-23 12:00:00.000001+00:00"});
            Change::new(Message::new(
                cqrs::SignalType::Save,
                "all_types",
                json!(id),
                data.as_object().unwrap().clone(),
            ))
        };
        let r = apply_changes(&mut db, &spec, vec![row(1, true), row(2, false)]);
        assert_eq!(r.stats.rows_written, 2);
        let got = texts(
            &mut db,
            "SELECT CAST(id AS TEXT) || '|' || COALESCE(CAST(f AS TEXT), 'null') || '|' || COALESCE(CAST(ts AS TEXT), 'null') || '|' \
             || COALESCE(CAST(j AS TEXT), 'null') || '|' || COALESCE(CAST(jb AS TEXT), 'null') || '|' || COALESCE(CAST(i AS TEXT), 'null') \
             || '|' || COALESCE(CAST(b AS TEXT), 'null') AS t FROM all_types ORDER BY id",
        );
        let full = match kind {
            Kind::Postgres => {
                r#"1|1.5|2026-11-23 12:00:00.123456|{"a":[1,"x"]}|[true, null]|-7|true"#
            }
            Kind::Sqlite => r#"1|1.5|2026-11-23 12:00:00.123456|{"a":[1,"x"]}|[true,null]|-7|1"#,
        };
        assert_eq!(
            got,
            [
                Some(full.to_string()),
                Some("2|null|null|null|null|null|null".to_string())
            ]
        );
    }
);

/// Two workers apply one key at once: worker A's DELETE (revision 5) is applied and held open,
/// then worker B applies an older SAVE (revision 4). B must wait for A and then see the
/// tombstone; without the locks B reads the row before the delete commits and re-creates it.
/// `a_keys`/`b_keys` pad each batch with other keys (a batch of thousands of keys must still
/// lock within PostgreSQL's shared lock table).
fn interleaved_delete_and_older_save(a_keys: usize, b_keys: usize) {
    use std::sync::mpsc;
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    apply_items(&mut db, vec![ItemState::new(1, 3, at(30)).save()]);
    let mut deletes = vec![Change::new(item_delete(1, 5, at(50)))];
    deletes.extend((1..a_keys as i64).map(|k| Change::new(item_delete(1_000_000 + k, 1, at(1)))));
    let mut saves = vec![Change::new(ItemState::new(1, 4, at(40)).save())];
    saves.extend(
        (1..b_keys as i64).map(|k| Change::new(ItemState::new(2_000_000 + k, 1, at(1)).save())),
    );
    let replica = TableReplica::new(item_spec());
    let (applied, wait) = mpsc::channel();
    let mut a = t.connect();
    let holder = {
        let replica = TableReplica::new(item_spec());
        std::thread::spawn(move || {
            let refs: Vec<&Change> = deletes.iter().collect();
            a.write_transaction(|db| {
                let r = replica.apply(db, &refs)?;
                applied.send(()).unwrap();
                // Long enough for B to reach its reads and writes if nothing holds it.
                std::thread::sleep(std::time::Duration::from_millis(500));
                Ok(r)
            })
            .expect("the DELETE batch applies")
        })
    };
    wait.recv().unwrap();
    let mut b = t.connect();
    let refs: Vec<&Change> = saves.iter().collect();
    let report = b
        .write_transaction(|db| replica.apply(db, &refs))
        .expect("the SAVE batch applies");
    holder.join().unwrap();
    assert_eq!(
        outcome_names(&report)[0],
        "skipped: deleted (tombstone)",
        "B decided before A's delete committed"
    );
    assert!(
        !items(&mut db).contains_key(&1),
        "the older SAVE re-created a deleted row"
    );
    assert_eq!(tombstones(&mut db, "item")["1"].0, 5);
}

#[test]
fn concurrent_batches_on_one_key_serialize() {
    interleaved_delete_and_older_save(3, 3);
}

#[test]
fn a_large_batch_and_a_small_one_on_one_key_serialize() {
    interleaved_delete_and_older_save(8_000, 3);
    interleaved_delete_and_older_save(3, 8_000);
}

// A double that needs all 17 significant digits reaches the replica bit for bit. serde_json's
// default float parsing can be one unit in the last place off; about 1 double in 5 written by a
// master (Python's `repr`, our own encoder) came out different on the replica.
both!(
    fn doubles_reach_the_replica_bit_for_bit(kind: Kind) {
        let t = TestDb::new(kind);
        let mut db = t.connect();
        let spec = typed_spec(kind);
        let (_, body) = capture("30_typed_create.json").remove(0);
        let template: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let id = template["instance_data"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let doubles = [
            0.1 + 0.2,
            1.0715660391465826e-75,
            1234.5678 * 1.1,
            std::f64::consts::PI / 3.0,
            -9.007199254740993e15,
            5e-324,
        ];
        for (rev, ratio) in doubles.into_iter().enumerate() {
            let mut v = template.clone();
            v["instance_data"]["ratio"] = serde_json::json!(ratio);
            v["instance_data"]["cqrs_revision"] = serde_json::json!(rev);
            // The body's text as a master writes it: the shortest that reads back exactly.
            let text = serde_json::to_string(&v).unwrap();
            assert!(text.contains(&format!("\"ratio\":{ratio:?}")), "{text}");
            let r = apply_changes(
                &mut db,
                &spec,
                vec![Change::new(Message::decode(text.as_bytes()).unwrap())],
            );
            assert!(
                matches!(r.outcomes[0], Outcome::Applied),
                "{:?}",
                r.outcomes[0]
            );
            let sql = sql_for(
                &db,
                "UPDATE typed SET flag = flag WHERE id = $1 AND ratio = $2",
            );
            let id_bind = match kind {
                Kind::Postgres => cqrs::value::SqlValue::Uuid(id.parse().unwrap()),
                Kind::Sqlite => cqrs::value::SqlValue::Text(id.clone()),
            };
            let equal = db
                .execute(&sql, vec![id_bind, cqrs::value::SqlValue::Double(ratio)])
                .unwrap();
            assert_eq!(
                equal,
                1,
                "ratio {ratio:?} ({:#x}) changed on the way",
                ratio.to_bits()
            );
        }
    }
);

// The statements run for every batch are parsed and planned once per connection: the relay's
// claim and the consumer's locks. Planning each cost PostgreSQL about 0.2 ms,
// more than running it on a batch of a few rows.
#[test]
fn batch_statements_are_planned_once_per_connection() {
    let t = TestDb::new(Kind::Postgres);
    let mut db = t.connect();
    let spec = item_spec();
    for rev in 0..3 {
        db.write_transaction(|db| cqrs::outbox::take(db, 10, chrono::Utc::now()))
            .unwrap();
        let state = ItemState::new(1, rev, at(i64::from(rev)));
        let r = apply_changes(&mut db, &spec, vec![Change::new(state.save())]);
        assert!(
            matches!(r.outcomes[0], Outcome::Applied),
            "{:?}",
            r.outcomes[0]
        );
    }
    let mut prepared = |like: &str| {
        count(
            &mut db,
            &format!(
                "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '{like}'"
            ),
        )
    };
    assert_eq!(prepared("DELETE FROM cqrs_outbox%"), 1, "the relay's claim");
    assert_eq!(
        prepared("%pg_advisory_xact_lock%"),
        1,
        "the consumer's locks"
    );
    // The state reads are not: a generic plan for hundreds of keys halved a drain.
    assert_eq!(prepared("%FROM \"items\" WHERE%"), 0, "the rows' states");
}
