//! The created rows' SAVEs written in the message that commits: on PostgreSQL, a transaction
//! whose captured changes are all rows created through [`Tx::insert_into`] of models without
//! Rust hooks commits in three round trips, as the same transaction without capture does
//! (`BEGIN`, the INSERT, `COMMIT`), instead of five (the stamp and the outbox INSERT each one
//! more).
//!
//! How: the INSERT also returns [`CreatedMark`], which appends each new key to the
//! transaction-local setting `cqrs.created` (undone with a savepoint that rolls back, gone at
//! commit). At commit one simple-protocol message carries the statement that stamps those rows
//! (revision 0, `cqrs_updated` the database's clock) and writes their SAVEs with bodies built by
//! PostgreSQL (`in_sql.rs`, the forms trigger capture writes), then `COMMIT`. No value is
//! written into that SQL: the keys travel through the setting, the rest is the model's names and
//! the number of rows capture expects. The rows are read as they are at commit, as the general
//! path reads them, so the application's triggers and later statements are in the bodies.
//!
//! `cqrs_capture_check` (migration `cqrs_capture_check`) fails the statement, and the COMMIT
//! behind it, when fewer rows are found than were created: one deleted or re-keyed outside
//! capture, which the general path refuses too.

use std::collections::BTreeMap;

use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Nullable, Text};
use diesel::sqlite::Sqlite;

use super::in_sql::Bodies;
use super::{State, Tx};
use crate::db::{Backend, SqlConn};
use crate::error::Result;
use crate::model::MasterModel;
use crate::rows::quote;

/// The transaction-local setting holding the keys created rows were inserted with.
const SETTING: &str = "cqrs.created";

/// The length of [`SETTING`] past which rows are no longer recorded (about 500 keys): those
/// take the general path at commit.
const MAX_RECORDED: usize = 16 * 1024;

/// A column an insert captured by [`Tx::insert_into`] returns beside the caller's: on
/// PostgreSQL, for a model whose SAVEs the database can write, it records the new row's key in
/// the transaction and is `''` (see the module docs); `NULL` for a row not recorded.
#[derive(Debug, Clone, Copy)]
pub struct CreatedMark<K> {
    key: K,
    /// The model's cqrs_id, when the mark records.
    cqrs_id: Option<&'static str>,
}

impl<K> Expression for CreatedMark<K> {
    type SqlType = Nullable<Text>;
}

impl<K, QS> SelectableExpression<QS> for CreatedMark<K> where K: SelectableExpression<QS> {}
impl<K, QS> AppearsOnTable<QS> for CreatedMark<K> where K: AppearsOnTable<QS> {}

impl<K: ValidGrouping<GB>, GB> ValidGrouping<GB> for CreatedMark<K> {
    type IsAggregate = K::IsAggregate;
}

impl<K> QueryId for CreatedMark<K> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<K: QueryFragment<Pg>> QueryFragment<Pg> for CreatedMark<K> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        let Some(id) = self.cqrs_id else {
            out.push_sql("NULL");
            return Ok(());
        };
        // Evaluated row by row, each appending its key to what the rows before it left; `''`
        // when recorded. Past MAX_RECORDED bytes a row is not recorded (`NULL`): appending
        // copies the whole setting, which would make a large insert quadratic.
        out.push_sql(&format!(
            "CASE WHEN length(COALESCE(current_setting('{SETTING}', true), '')) < {MAX_RECORDED} \
             THEN left(set_config('{SETTING}', concat_ws(',', NULLIF(current_setting('{SETTING}', true), ''), \
             jsonb_build_array("
        ));
        out.push_bind_param::<Text, str>(id)?;
        out.push_sql(", ");
        self.key.walk_ast(out.reborrow())?;
        out.push_sql(")::text), true), 0) END");
        Ok(())
    }
}

impl<K> QueryFragment<Sqlite> for CreatedMark<K> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> diesel::QueryResult<()> {
        // No round trips to save in process.
        out.push_sql("NULL");
        Ok(())
    }
}

impl<'c, C: SqlConn + ?Sized> Tx<'c, C> {
    /// The mark an insert of model `M` returns: recording on PostgreSQL for a model whose
    /// messages the database can write (no Rust hooks, producing, captured by `atomic`).
    pub(super) fn created_mark<M: MasterModel, K>(&mut self, key: K) -> Result<CreatedMark<K>> {
        let spec = self.spec::<M>()?;
        let on = self.conn.backend() == Backend::Postgres
            && !self.by_trigger(&spec)
            && spec.produces()
            && !spec.hooks_ref().any();
        Ok(CreatedMark {
            key,
            cqrs_id: on.then_some(M::CQRS_ID),
        })
    }

    /// The message that writes this transaction's messages and commits it, when every change it
    /// captured is a row created with its key recorded (see the module docs); `None` otherwise,
    /// for the general path.
    pub(super) fn commit_in_sql(&mut self) -> Result<Option<String>> {
        super::foreign::settle(self.conn, &self.cap)?;
        let cap = self.cap.borrow();
        if cap.touched.is_empty() || !cap.syncs.is_empty() {
            return Ok(None);
        }
        let mut per_model: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, touch) in &cap.touched {
            if !matches!(touch.state, State::Created) || !cap.in_sql.contains(k) {
                return Ok(None);
            }
            *per_model.entry(k.0.as_str()).or_default() += 1;
        }
        // The cqrs_json_* functions write floats as the Rust encoder does with this setting;
        // the session's own is put back before COMMIT, for the application's deferred triggers.
        let mut script = String::from(
            "SELECT set_config('cqrs.float_digits', current_setting('extra_float_digits'), true), \
             set_config('extra_float_digits', '1', true);\n",
        );
        let models: Vec<(Bodies<'_>, usize)> = per_model
            .into_iter()
            .map(|(id, wanted)| (Bodies::new(&cap.specs[id]), wanted))
            .collect();
        script.push_str(&save_statement(&models));
        script.push_str(
            "SELECT set_config('extra_float_digits', current_setting('cqrs.float_digits'), true);\nCOMMIT;",
        );
        Ok(Some(script))
    }
}

/// The statement that stamps the rows the INSERTs recorded (`wanted` of each model) and writes
/// their SAVEs in the order they were inserted, failing when fewer are found.
fn save_statement(models: &[(Bodies<'_>, usize)]) -> String {
    // The recorded keys in insert order, by model.
    let mut sql = format!(
        "WITH k AS (SELECT e ->> 0 AS model, e ->> 1 AS key, min(n) AS n \
         FROM jsonb_array_elements(CAST('[' || COALESCE(current_setting('{SETTING}', true), '') || ']' AS jsonb)) \
         WITH ORDINALITY AS x(e, n) GROUP BY 1, 2)"
    );
    let mut saves = Vec::new();
    let mut checks = Vec::new();
    for (i, (b, wanted)) in models.iter().enumerate() {
        let t = b.spec().table();
        let key = t.key_column();
        let (lit, key_col, key_ty) = (b.lit(), quote(&key.name), key.ty.name());
        sql.push_str(&format!(
            ", f{i} AS (UPDATE {table} SET cqrs_revision = 0, cqrs_updated = statement_timestamp() \
             WHERE {key_col} IN (SELECT CAST(k.key AS {key_ty}) FROM k WHERE k.model = {lit}) RETURNING *)",
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
             JOIN k ON k.model = {lit} AND CAST(k.key AS {key_ty}) = r.{key_col}",
            pk = b.pk_text("r"),
        ));
        checks.push(format!(
            "cqrs_capture_check({lit}, {wanted}, (SELECT count(*) FROM sent WHERE cqrs_id = {lit}))"
        ));
    }
    sql.push_str(&format!(
        ", sent AS (INSERT INTO cqrs_outbox (message_id, cqrs_id, signal_type, pk, routing_key, body) \
         SELECT gen_random_uuid(), m.model, 'SAVE', m.pk, m.model, m.body FROM ({}) AS m ORDER BY m.n \
         RETURNING cqrs_id) SELECT {};\n",
        saves.join(" UNION ALL "),
        checks.join(", ")
    ));
    sql
}
