//! Created rows' SAVEs written by PostgreSQL in one prepared statement: when every change a
//! transaction captured is a created row of a model without Rust hooks (a few: [`MAX_ROWS`]), the
//! commit's work (stamp the rows revision 0 and `cqrs_updated`, read them as they are now, write
//! one SAVE each) is one statement whose bodies PostgreSQL builds (`in_sql.rs`, the forms trigger capture writes),
//! prepared once per connection. The general path (`commit.rs`) spends two statements, each
//! parsed and planned anew, and a trip through the application between them.
//!
//! The rows are read as they are at commit, as the general path reads them, so the
//! application's triggers and its later statements are in the bodies. The keys, their order
//! and the stamp are bound; the SQL holds only the models' names, so its text is fixed per set
//! of models and PostgreSQL plans it once. `cqrs_capture_check` (migration
//! `cqrs_capture_check`) fails it when fewer rows are found than were created (one deleted or
//! re-keyed outside capture), which the general path refuses too.

use std::collections::BTreeMap;

use super::in_sql::Bodies;
use super::{State, Tx, now};
use crate::db::prepared::Statement;
use crate::db::{Backend, SqlConn};
use crate::error::Result;
use crate::rows::quote;
use crate::value::{ColumnType, SqlValue};

/// The most created rows a transaction writes this way. Preparing saves about 0.1 ms per commit
/// (planning), but PostgreSQL builds a body as `jsonb` slower than Rust serializes it: about 47 µs
/// a row in this statement against about 15 µs on the general path (measured on 100-row
/// transactions: 5.2–9.7 ms for this statement against 2.3 ms for the two general ones), so past
/// a few rows the general path is faster.
const MAX_ROWS: usize = 4;

impl<'c, C: SqlConn + ?Sized> Tx<'c, C> {
    /// Write this transaction's messages with one statement when every change it captured is a
    /// created row of a model whose SAVEs PostgreSQL can write; false (nothing done) otherwise,
    /// for the general path.
    pub(super) fn saves_in_sql(&mut self) -> Result<bool> {
        if self.conn.backend() != Backend::Postgres {
            return Ok(false);
        }
        super::foreign::settle(self.conn, &self.cap)?;
        let statement = {
            let cap = self.cap.borrow();
            if cap.touched.is_empty() || cap.touched.len() > MAX_ROWS || !cap.syncs.is_empty() {
                return Ok(false);
            }
            // Per model (by cqrs_id): its keys and their places in the transaction's order.
            let mut models: BTreeMap<&str, (Vec<SqlValue>, Vec<SqlValue>)> = BTreeMap::new();
            for (n, k) in cap.order.iter().enumerate() {
                let touch = &cap.touched[k];
                let spec = &cap.specs[k.0.as_str()];
                if !matches!(touch.state, State::Created)
                    || spec.hooks_ref().any()
                    || !spec.produces()
                {
                    return Ok(false);
                }
                let (keys, places) = models.entry(k.0.as_str()).or_default();
                keys.push(touch.key.clone());
                places.push(SqlValue::BigInt(n as i64));
            }
            let bodies: Vec<(Bodies<'_>, Vec<SqlValue>, Vec<SqlValue>)> = models
                .into_iter()
                .map(|(id, (keys, places))| (Bodies::new(&cap.specs[id]), keys, places))
                .collect();
            save_statement(bodies)?
        };
        self.conn.exec_prepared(&statement)?;
        Ok(true)
    }
}

/// The statement that stamps each model's created rows (`keys`, at `places` in the
/// transaction's order) and writes their SAVEs in that order, failing when fewer rows are found
/// than were created. Every value is bound; the text depends only on the models.
fn save_statement(models: Vec<(Bodies<'_>, Vec<SqlValue>, Vec<SqlValue>)>) -> Result<Statement> {
    let mut st = Statement::default();
    st.sql("WITH stamp AS (SELECT CAST(")
        .bind(SqlValue::Timestamptz(now()))?
        .sql(" AS timestamptz) AS at)");
    let mut saves = Vec::new();
    let mut checks = Vec::new();
    for (i, (b, keys, places)) in models.into_iter().enumerate() {
        let t = b.spec().table();
        let key = t.key_column();
        let (lit, key_col, key_ty) = (b.lit(), quote(&key.name), key.ty.name());
        let wanted = keys.len() as i64;
        st.sql(&format!(", k{i} AS (SELECT * FROM unnest(CAST("))
            .bind(SqlValue::Array(key.ty, keys))?
            .sql(&format!(" AS {key_ty}[]), CAST("))
            .bind(SqlValue::Array(ColumnType::BigInt, places))?
            .sql(" AS bigint[])) AS k(key, n))");
        // `= ANY(ARRAY(subquery))`: a plan made for a few keys is not reused for many
        // (ARCHITECTURE.md §8).
        st.sql(&format!(
            ", f{i} AS (UPDATE {table} SET cqrs_revision = 0, cqrs_updated = (SELECT at FROM stamp) \
             WHERE {key_col} = ANY(ARRAY(SELECT key FROM k{i})) RETURNING *)",
            table = quote(t.table()),
        ));
        let body = b.body(
            "SAVE",
            &b.data("r"),
            &b.created_previous(&b.tracked_json("r")),
            &b.key_json("r"),
        );
        saves.push(format!(
            "SELECT k.n, {lit} AS model, {pk} AS pk, {body} AS body FROM f{i} AS r \
             JOIN k{i} AS k ON k.key = r.{key_col}",
            pk = b.pk_text("r"),
        ));
        checks.push((lit.to_string(), wanted));
    }
    st.sql(&format!(
        ", sent AS (INSERT INTO cqrs_outbox (message_id, cqrs_id, signal_type, pk, routing_key, body) \
         SELECT gen_random_uuid(), m.model, 'SAVE', m.pk, m.model, m.body FROM ({}) AS m ORDER BY m.n \
         RETURNING cqrs_id) SELECT ",
        saves.join(" UNION ALL "),
    ));
    for (i, (lit, wanted)) in checks.into_iter().enumerate() {
        if i > 0 {
            st.sql(", ");
        }
        st.sql(&format!("cqrs_capture_check({lit}, "))
            .bind(SqlValue::BigInt(wanted))?
            .sql(&format!(
                ", (SELECT count(*) FROM sent WHERE cqrs_id = {lit}))"
            ));
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ColumnSpec, MasterSpec, TableSpec};

    fn spec(id: &str, table: &str, key: ColumnType) -> MasterSpec {
        MasterSpec::new(
            TableSpec::new(id, table)
                .key("id", key)
                .column(ColumnSpec::new("name", ColumnType::Text))
                .build()
                .unwrap(),
        )
    }

    /// The keys are matched as an array built by a subquery, each model's count is checked, the
    /// SAVEs are written in the transaction's order across models, and every value is bound.
    #[test]
    fn the_commit_statement_binds_every_value_and_checks_each_model() {
        let a = spec("a", "a_items", ColumnType::BigInt);
        let b = spec("b", "b_items", ColumnType::Uuid);
        let u = SqlValue::Uuid(uuid::Uuid::nil());
        let st = save_statement(vec![
            (
                Bodies::new(&a),
                vec![SqlValue::BigInt(7)],
                vec![SqlValue::BigInt(0)],
            ),
            (Bodies::new(&b), vec![u], vec![SqlValue::BigInt(1)]),
        ])
        .unwrap();
        let (sql, binds) = st.render(Backend::Postgres);
        assert!(
            sql.contains("k0 AS (SELECT * FROM unnest(CAST($2 AS bigint[]), CAST($3 AS bigint[]))")
        );
        assert!(sql.contains("\"id\" = ANY(ARRAY(SELECT key FROM k0)) RETURNING *"));
        assert!(sql.contains("unnest(CAST($4 AS uuid[]), CAST($5 AS bigint[]))"));
        assert!(sql.contains("cqrs_capture_check('a', $6, "));
        assert!(sql.contains("cqrs_capture_check('b', $7, "));
        assert!(sql.contains("ORDER BY m.n"));
        assert_eq!(binds.len(), 7);
        assert!(!sql.contains("00000000-0000"), "{sql}");
    }
}
