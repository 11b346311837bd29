//! django-cqrs message bodies written by PostgreSQL: the SQL expressions that turn a row of a
//! master model's table into the body the Rust encoder would write for it. Trigger capture
//! (`triggers.rs`) builds all its bodies with them; `atomic` builds the SAVEs of rows it created
//! with them when the model has no Rust hooks (`fast.rs`), so the outbox rows go out with the
//! statement that stamps the rows instead of after a round trip through the application.
//!
//! Values are written by the `cqrs_json_*` functions of the migrations, which need
//! `extra_float_digits = 1` in the session (the trigger functions set it themselves).

use crate::db::dialect::jsonb_object;
use crate::model::MasterSpec;
use crate::rows::quote;
use crate::value::ColumnType;

/// The body expressions of one model; `r` in each method is the SQL name of a row of its table.
pub(super) struct Bodies<'a> {
    spec: &'a MasterSpec,
    /// The cqrs_id as a SQL literal.
    lit: String,
    tracked: Vec<usize>,
}

impl<'a> Bodies<'a> {
    pub(super) fn new(spec: &'a MasterSpec) -> Bodies<'a> {
        Bodies {
            spec,
            lit: literal(spec.table().cqrs_id()),
            tracked: spec.tracked_indexes().collect(),
        }
    }

    /// The model.
    pub(super) fn spec(&self) -> &MasterSpec {
        self.spec
    }

    /// The cqrs_id as a SQL literal.
    pub(super) fn lit(&self) -> &str {
        &self.lit
    }

    /// The primary key's wire value (`jsonb`).
    pub(super) fn key_json(&self, r: &str) -> String {
        let key = self.spec.table().key_column();
        value_expr(key.ty, &format!("{r}.{}", quote(&key.name)))
    }

    /// The primary key's canonical text: the outbox's `pk`.
    pub(super) fn pk_text(&self, r: &str) -> String {
        format!("({})::text", self.key_json(r))
    }

    /// The tracked columns by wire name (`jsonb`).
    pub(super) fn tracked_json(&self, r: &str) -> String {
        jsonb_object(
            &self
                .tracked
                .iter()
                .map(|&c| self.column_pair(c, r))
                .collect::<Vec<_>>(),
        )
    }

    /// `instance_data`: every column by wire name (`jsonb`).
    pub(super) fn data(&self, r: &str) -> String {
        jsonb_object(
            &(0..self.spec.table().columns().len())
                .map(|c| self.column_pair(c, r))
                .collect::<Vec<_>>(),
        )
    }

    /// A whole body as text.
    pub(super) fn body(&self, signal: &str, data: &str, previous: &str, key: &str) -> String {
        format!(
            "jsonb_build_object('signal_type', '{signal}', 'cqrs_id', {lit}, 'instance_data', {data}, \
             'previous_data', {previous}, 'instance_pk', {key}, 'correlation_id', NULL, 'retries', 0, \
             'expires', NULL, 'meta', '{{}}'::jsonb)::text",
            lit = self.lit
        )
    }

    /// django-cqrs's `previous_data` on create: `{field: null}` for each tracked field that is
    /// set in `now` (the tracked values as [`Bodies::tracked_json`] writes them).
    pub(super) fn created_previous(&self, now: &str) -> String {
        if self.tracked.is_empty() {
            "NULL::jsonb".to_string()
        } else {
            format!(
                "(SELECT COALESCE(jsonb_object_agg(p.key, 'null'::jsonb), '{{}}'::jsonb) FROM jsonb_each({now}) AS p WHERE p.value <> 'null'::jsonb)"
            )
        }
    }

    /// `previous_data` on update: the tracked values from before the transaction's first change
    /// (`first_old`; NULL for a row created in it) that differ from `now`.
    pub(super) fn previous(&self, first_old: &str, now: &str) -> String {
        if self.tracked.is_empty() {
            "NULL::jsonb".to_string()
        } else {
            format!(
                "CASE WHEN {first_old} IS NULL THEN {created} ELSE \
                 (SELECT COALESCE(jsonb_object_agg(p.key, p.value), '{{}}'::jsonb) FROM jsonb_each({first_old}) AS p \
                 WHERE p.value IS DISTINCT FROM {now} -> p.key) END",
                created = self.created_previous(now)
            )
        }
    }

    /// `'wire', <value>` for column `c` of row `r`.
    fn column_pair(&self, c: usize, r: &str) -> String {
        let col = &self.spec.table().columns()[c];
        format!(
            "{}, {}",
            literal(&col.wire),
            value_expr(col.ty, &format!("{r}.{}", quote(&col.name)))
        )
    }
}

/// The wire form of a column's value as `jsonb` (SQL NULL for NULL): what
/// [`SqlValue::to_json`](crate::value::SqlValue::to_json) writes for it.
pub(super) fn value_expr(ty: ColumnType, expr: &str) -> String {
    match ty {
        ColumnType::Bool
        | ColumnType::SmallInt
        | ColumnType::Integer
        | ColumnType::BigInt
        | ColumnType::Text
        | ColumnType::Uuid
        | ColumnType::Json => format!("to_jsonb({expr})"),
        ColumnType::Jsonb => expr.to_string(),
        ColumnType::Float | ColumnType::Double => format!("cqrs_json_float({expr})"),
        ColumnType::Numeric => format!("cqrs_json_numeric({expr})"),
        ColumnType::Date => format!("to_jsonb(to_char({expr}, 'YYYY-MM-DD'))"),
        ColumnType::Timestamp => format!("cqrs_json_timestamp({expr})"),
        ColumnType::Timestamptz => format!("cqrs_json_timestamptz({expr})"),
    }
}

/// A SQL string literal of a name the model declares (never of a value).
pub(super) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
