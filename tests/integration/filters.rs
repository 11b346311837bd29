//! Django-style lookup filters on both backends: each lookup selects exactly the expected rows.

use cqrs::db::SqlConn;
use cqrs::ops::filter::compile;
use cqrs::value::{ColumnType, SqlValue};
use cqrs::{ColumnSpec, ErrorKind, TableSpec};
use cqrs_tests::*;

fn spec() -> TableSpec {
    TableSpec::new("item", "m_items")
        .key("id", ColumnType::BigInt)
        .column(ColumnSpec::new("name", ColumnType::Text))
        .column(ColumnSpec::new("value", ColumnType::BigInt))
        .column(
            ColumnSpec::new("owner_id", ColumnType::BigInt)
                .wire("owner")
                .nullable(),
        )
        .build()
        .unwrap()
}

const NAMES: [&str; 7] = [
    "Alpha",
    "alpha",
    "ALPHABET",
    "50% off",
    "under_score",
    "it's \"quoted\"",
    "beta",
];

fn seeded(kind: Kind) -> TestDb {
    let t = TestDb::new(kind);
    let mut db = t.connect();
    for (i, name) in NAMES.iter().enumerate() {
        let id = i as i64 + 1;
        let owner = if id % 2 == 0 {
            SqlValue::Null(ColumnType::BigInt)
        } else {
            SqlValue::BigInt(id * 100)
        };
        let sql = sql_for(
            &db,
            "INSERT INTO m_items (id, name, value, updated, owner_id) VALUES ($1, $2, $3, $4, $5)",
        );
        db.exec(
            &sql,
            vec![
                SqlValue::BigInt(id),
                SqlValue::Text(name.to_string()),
                SqlValue::BigInt(id * 10),
                SqlValue::Timestamptz(at(0)),
                owner,
            ],
        )
        .unwrap();
    }
    t
}

fn select(db: &mut cqrs::Db, filter: &str) -> cqrs::Result<Vec<i64>> {
    let c = compile(&spec(), db.backend(), filter, 1)?;
    let sql = format!(
        "SELECT CAST(id AS TEXT) AS j FROM m_items WHERE {} ORDER BY id",
        c.sql
    );
    Ok(db
        .load_text(&sql, c.binds)?
        .iter()
        .map(|s| s.parse().unwrap())
        .collect())
}

both!(
    fn each_lookup_selects_exactly_the_expected_rows(kind: Kind) {
        let t = seeded(kind);
        let mut db = t.connect();
        let cases: &[(&str, &[i64])] = &[
            ("{}", &[1, 2, 3, 4, 5, 6, 7]),
            (r#"{"name": "alpha"}"#, &[2]),
            (r#"{"name__exact": "Alpha"}"#, &[1]),
            (r#"{"name__iexact": "ALPHA"}"#, &[1, 2]),
            (r#"{"id__in": [1, 3, 99]}"#, &[1, 3]),
            (r#"{"id__in": []}"#, &[]),
            (r#"{"value__gt": 40}"#, &[5, 6, 7]),
            (r#"{"value__gte": 40}"#, &[4, 5, 6, 7]),
            (r#"{"value__lt": 20}"#, &[1]),
            (r#"{"value__lte": 20}"#, &[1, 2]),
            (r#"{"value__range": [20, 40]}"#, &[2, 3, 4]),
            (r#"{"owner_id__isnull": true}"#, &[2, 4, 6]),
            (r#"{"owner__isnull": false}"#, &[1, 3, 5, 7]),
            (r#"{"owner": null}"#, &[2, 4, 6]),
            (r#"{"name__contains": "lpha"}"#, &[1, 2]),
            (r#"{"name__icontains": "LPHA"}"#, &[1, 2, 3]),
            (r#"{"name__startswith": "al"}"#, &[2]),
            (r#"{"name__istartswith": "al"}"#, &[1, 2, 3]),
            (r#"{"name__endswith": "off"}"#, &[4]),
            (r#"{"name__iendswith": "BET"}"#, &[3]),
            (r#"{"name__contains": "%"}"#, &[4]),
            (r#"{"name__contains": "_"}"#, &[5]),
            (r#"{"name__startswith": "50%"}"#, &[4]),
            (r#"{"name__contains": "'s \""}"#, &[6]),
            (r#"{"name__icontains": "a", "value__gte": 30}"#, &[3, 7]),
        ];
        for (filter, want) in cases {
            assert_eq!(select(&mut db, filter).unwrap(), *want, "{kind:?} {filter}");
        }
    }
);

both!(
    fn hostile_values_and_keys_leave_the_table_intact(kind: Kind) {
        let t = seeded(kind);
        let mut db = t.connect();
        assert_eq!(
            select(&mut db, r#"{"name": "x'; DROP TABLE m_items; --"}"#).unwrap(),
            Vec::<i64>::new()
        );
        let err = select(&mut db, r#"{"x'; DROP TABLE m_items; --": 1}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(select(&mut db, "{}").unwrap().len(), 7, "table intact");
    }
);

#[test]
fn bad_filters_are_usage_errors_with_a_reason() {
    let s = spec();
    for (filter, msg) in [
        (
            r#"{"nope": 1}"#,
            "unknown column `nope` in filter (columns: id, name, value, owner_id, cqrs_revision, cqrs_updated)",
        ),
        (
            r#"{"name__like": "a"}"#,
            "unknown lookup in `name__like` (lookups: exact, iexact, in, gt, gte, lt, lte, isnull, range, contains, icontains, startswith, istartswith, endswith, iendswith)",
        ),
        (
            "[1]",
            "filter must be a JSON object, e.g. {\"id__in\": [1, 2]}",
        ),
        (
            "{",
            "filter is not valid JSON: EOF while parsing an object at line 1 column 1",
        ),
        (
            r#"{"value__contains": "1"}"#,
            "filter `value__contains`: this lookup needs a text column, `value` is bigint",
        ),
        (
            r#"{"value": "ten"}"#,
            "filter `value`: \"ten\" is not a valid bigint",
        ),
        (
            r#"{"value__range": [1]}"#,
            "filter `value__range`: `range` takes [low, high]",
        ),
    ] {
        let err = compile(&s, cqrs::db::Backend::Sqlite, filter, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{filter}");
        assert_eq!(err.message(), msg, "{filter}");
    }
}
