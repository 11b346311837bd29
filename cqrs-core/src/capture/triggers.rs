//! Trigger capture on PostgreSQL (`#[cqrs(capture = "trigger")]`): PL/pgSQL generated from a master
//! model's spec that captures every write to its table, whoever makes it (psql, `COPY`, a bulk
//! `UPDATE`, another service), keeping the rules [`atomic`](super::atomic) keeps
//! (ARCHITECTURE.md §4):
//!
//! - `cqrs_<table>_stamp`, BEFORE INSERT OR UPDATE, per row: an insert gets revision 0 and
//!   `cqrs_updated` now; an update that changes the row gets revision + 1 and `cqrs_updated` now
//!   the first time the transaction changes it (a pending outbox row of the transaction says it
//!   did), the values it had otherwise. A client's own `cqrs_revision`/`cqrs_updated` never count;
//!   an update that changes nothing stays one.
//! - `cqrs_<table>_inserted`, `_updated`, `_deleted`, AFTER, per statement over its transition
//!   tables: one outbox row per changed row, keyed by (transaction, cqrs_id, pk), the last state
//!   winning; `previous_data` from the tracked values before the transaction's first change;
//!   create-then-delete removes the pending SAVE; a DELETE carries the last published revision + 1.
//! - `cqrs_<table>_truncate`, BEFORE TRUNCATE: refused (no row-level record of what went).
//!
//! Values are written by the `cqrs_json_*` functions of the migrations, in the forms the Rust
//! encoder writes; the relay reads the body like any other.

use crate::db::dialect::jsonb_object;
use crate::db::{Backend, SqlConn};
use crate::error::{Error, Result};
use crate::model::{CaptureMode, MasterSpec};
use crate::rows::quote;
use crate::value::{ColumnType, SqlValue};

/// PostgreSQL's identifier limit: a longer name would be cut, and `check` would not find it.
const MAX_NAME: usize = 63;

/// The five functions (and their triggers) of one model, by name, with their bodies.
struct Generated {
    table: String,
    functions: Vec<(String, String)>,
}

/// When each function's trigger fires.
const TRIGGERS: [(&str, &str); 5] = [
    ("stamp", "BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW"),
    (
        "inserted",
        "AFTER INSERT ON {t} REFERENCING NEW TABLE AS cqrs_new FOR EACH STATEMENT",
    ),
    (
        "updated",
        "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS cqrs_old NEW TABLE AS cqrs_new FOR EACH STATEMENT",
    ),
    (
        "deleted",
        "AFTER DELETE ON {t} REFERENCING OLD TABLE AS cqrs_old FOR EACH STATEMENT",
    ),
    ("truncate", "BEFORE TRUNCATE ON {t} FOR EACH STATEMENT"),
];

/// The install script of a trigger-captured model: `CREATE OR REPLACE` of its functions, its
/// triggers dropped and created. Idempotent; an application's own migration may run it.
///
/// ```
/// use cqrs::{ColumnSpec, MasterSpec, TableSpec, model::CaptureMode, value::ColumnType};
/// let spec = MasterSpec::new(
///     TableSpec::new("item", "items").key("id", ColumnType::BigInt)
///         .column(ColumnSpec::new("price", ColumnType::Numeric)).build().unwrap(),
/// )
/// .capture(CaptureMode::Trigger)
/// .unwrap();
/// let sql = cqrs::capture::triggers::install_sql(&spec).unwrap();
/// assert!(sql.contains("CREATE TRIGGER \"zz_cqrs_items_stamp\""));
/// ```
pub fn install_sql(spec: &MasterSpec) -> Result<String> {
    let g = generate(spec)?;
    let mut sql = String::new();
    for (name, body) in &g.functions {
        sql.push_str(&format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $cqrs${body}$cqrs$;\n",
            quote(name)
        ));
    }
    for ((name, _), (what, when)) in g.functions.iter().zip(TRIGGERS) {
        let when = when.replace("{t}", &quote(&g.table));
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {tg} ON {t};\nCREATE TRIGGER {tg} {when} EXECUTE FUNCTION {f}();\n",
            tg = quote(&trigger_name(&g.table, what)),
            f = quote(name),
            t = quote(&g.table),
        ));
    }
    Ok(sql)
}

/// The script that removes the triggers of a model's table and their functions (back to capture
/// by `atomic`); whatever the model's capture mode is now.
pub fn uninstall_sql(spec: &MasterSpec) -> Result<String> {
    let table = spec.table().table();
    Ok(TRIGGERS
        .iter()
        .map(|(what, _)| {
            format!(
                "DROP TRIGGER IF EXISTS {tg} ON {t};\nDROP FUNCTION IF EXISTS {f}();\n",
                tg = quote(&trigger_name(table, what)),
                f = quote(&function_name(table, what)),
                t = quote(table)
            )
        })
        .collect())
}

/// Remove a model's triggers, in one transaction.
pub fn uninstall<C: SqlConn + ?Sized>(conn: &mut C, spec: &MasterSpec) -> Result<()> {
    postgres_only(conn, spec)?;
    let sql = uninstall_sql(spec)?;
    crate::db::in_transaction(conn, |c| c.exec_script(&sql))
}

/// Install (or replace) a model's triggers, in one transaction.
pub fn install<C: SqlConn + ?Sized>(conn: &mut C, spec: &MasterSpec) -> Result<()> {
    postgres_only(conn, spec)?;
    let sql = install_sql(spec)?;
    crate::db::in_transaction(conn, |c| c.exec_script(&sql))
}

/// What differs between a model and the triggers installed for it: a missing or changed function
/// (the model's columns changed since `install`), a missing or disabled trigger. Empty: in step.
pub fn check<C: SqlConn + ?Sized>(conn: &mut C, spec: &MasterSpec) -> Result<Vec<String>> {
    postgres_only(conn, spec)?;
    let g = generate(spec)?;
    let mut problems = Vec::new();
    for ((name, body), (what, _)) in g.functions.iter().zip(TRIGGERS) {
        let trigger = trigger_name(&g.table, what);
        let installed = conn.load_text(
            "SELECT p.prosrc AS j FROM pg_proc p WHERE p.proname = $1 AND p.pronamespace = current_schema()::regnamespace",
            vec![SqlValue::Text(name.clone())],
        )?;
        match installed.first() {
            None => problems.push(format!("function {name}() is not installed")),
            Some(src) if src != body => problems.push(format!(
                "function {name}() differs from the model (its columns or options changed since it was installed)"
            )),
            Some(_) => {}
        }
        let state = conn.load_text(
            "SELECT t.tgenabled::text AS j FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) AND t.tgname = $2",
            vec![SqlValue::Text(quote(&g.table)), SqlValue::Text(trigger.clone())],
        )?;
        match state.first().map(String::as_str) {
            None => problems.push(format!("trigger {trigger} is not on table {}", g.table)),
            Some("O" | "A") => {}
            Some(other) => problems.push(format!(
                "trigger {trigger} on table {} is disabled (tgenabled = {other})",
                g.table
            )),
        }
    }
    Ok(problems)
}

/// True when the database's triggers capture this model's writes, so `atomic` must not.
pub(crate) fn captures(spec: &MasterSpec, backend: Backend) -> bool {
    spec.capture_mode() == CaptureMode::Trigger && backend == Backend::Postgres
}

/// Fails unless the table's five triggers are installed and enabled: without them, writes to a
/// trigger-captured model would be sent by nobody (`cqrs triggers check` also compares the
/// functions with the model).
pub(crate) fn require_installed<C: SqlConn + ?Sized>(
    conn: &mut C,
    spec: &MasterSpec,
) -> Result<()> {
    let table = spec.table().table();
    let mut binds = vec![SqlValue::Text(quote(table))];
    binds.extend(
        TRIGGERS
            .iter()
            .map(|(what, _)| SqlValue::Text(trigger_name(table, what))),
    );
    let found = conn.load_text(
        "SELECT CAST(count(*) AS TEXT) AS j FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) \
         AND t.tgname IN ($2, $3, $4, $5, $6) AND t.tgenabled IN ('O', 'A')",
        binds,
    )?;
    if found.first().map(String::as_str) == Some("5") {
        return Ok(());
    }
    Err(Error::config(format!(
        "master `{}` is captured by triggers (capture = \"trigger\") but table {table} does not have its five enabled: run `cqrs triggers install` (`cqrs triggers check` says which)",
        spec.table().cqrs_id()
    )))
}

fn postgres_only<C: SqlConn + ?Sized>(conn: &C, spec: &MasterSpec) -> Result<()> {
    if conn.backend() == Backend::Postgres {
        return Ok(());
    }
    Err(Error::config(format!(
        "master `{}`: trigger capture is for PostgreSQL; on SQLite `cqrs::atomic` captures the model",
        spec.table().cqrs_id()
    )))
}

fn function_name(table: &str, what: &str) -> String {
    format!("cqrs_{table}_{what}")
}

/// The trigger of a function. PostgreSQL fires a table's BEFORE row triggers in the order of
/// their names: the stamp's sorts after the application's own (`set_updated_at`, `items_…`), so
/// it sees the row they leave and bumps the revision of a change they make.
fn trigger_name(table: &str, what: &str) -> String {
    match what {
        "stamp" => format!("zz_cqrs_{table}_stamp"),
        _ => function_name(table, what),
    }
}

fn generate(spec: &MasterSpec) -> Result<Generated> {
    let t = spec.table();
    let id = t.cqrs_id();
    if spec.capture_mode() != CaptureMode::Trigger {
        return Err(Error::config(format!(
            "master `{id}` is captured by atomic, not by triggers (capture = \"trigger\" selects them)"
        )));
    }
    if spec.hooks_ref().any() {
        return Err(Error::config(format!(
            "master `{id}`: trigger capture cannot call the model's Rust hooks: capture it with atomic"
        )));
    }
    if !spec.produces() {
        return Err(Error::config(format!(
            "master `{id}`: trigger capture keeps its transaction's state in the outbox, so it cannot run with produce = false"
        )));
    }
    let table = t.table().to_string();
    // A name holding the body's dollar-quote tag would end the body early.
    for name in std::iter::once(id).chain(t.columns().iter().map(|c| c.wire.as_str())) {
        if name.contains("$cqrs$") {
            return Err(Error::config(format!(
                "master `{id}`: the name {name:?} cannot be used in trigger capture"
            )));
        }
    }
    for (what, _) in TRIGGERS {
        let name = trigger_name(&table, what);
        if name.len() > MAX_NAME {
            return Err(Error::config(format!(
                "master `{id}`: the trigger name {name} is longer than PostgreSQL's {MAX_NAME} bytes"
            )));
        }
    }
    let lit = literal(id);
    let key = quote(&t.key_column().name);
    let key_json = |r: &str| value_expr(t.key_column().ty, &format!("{r}.{key}"));
    let pk_text = |r: &str| format!("({})::text", key_json(r));
    let tracked: Vec<usize> = spec.tracked_indexes().collect();
    let tracked_json = |r: &str| {
        jsonb_object(
            &tracked
                .iter()
                .map(|&c| column_pair(spec, c, r))
                .collect::<Vec<_>>(),
        )
    };
    let data = |r: &str| {
        jsonb_object(
            &(0..t.columns().len())
                .map(|c| column_pair(spec, c, r))
                .collect::<Vec<_>>(),
        )
    };
    let pending = |r: &str| {
        format!(
            "SELECT 1 FROM cqrs_outbox WHERE capture_tx = txid_current() AND cqrs_id = {lit} AND pk = {}",
            pk_text(r)
        )
    };
    let body = |signal: &str, data: &str, previous: &str, key: &str| {
        format!(
            "jsonb_build_object('signal_type', '{signal}', 'cqrs_id', {lit}, 'instance_data', {data}, \
             'previous_data', {previous}, 'instance_pk', {key}, 'correlation_id', NULL, 'retries', 0, \
             'expires', NULL, 'meta', '{{}}'::jsonb)::text"
        )
    };
    // django-cqrs's previous_data on create: `{field: null}` for each tracked field that is set.
    let created_previous = |now: &str| {
        if tracked.is_empty() {
            "NULL::jsonb".to_string()
        } else {
            format!(
                "(SELECT COALESCE(jsonb_object_agg(p.key, 'null'::jsonb), '{{}}'::jsonb) FROM jsonb_each({now}) AS p WHERE p.value <> 'null'::jsonb)"
            )
        }
    };
    let insert_into = "INSERT INTO cqrs_outbox (message_id, cqrs_id, signal_type, pk, routing_key, body, capture_tx, capture_previous)";
    let on_conflict = "ON CONFLICT (capture_tx, cqrs_id, pk) WHERE capture_tx IS NOT NULL";

    let stamp = format!(
        "
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.cqrs_revision := 0;
        NEW.cqrs_updated := clock_timestamp();
        RETURN NEW;
    END IF;
    IF NEW.{key} IS DISTINCT FROM OLD.{key} THEN
        RAISE EXCEPTION 'cqrs: changing the primary key of a % row (% to %) is not captured: delete the row and insert it', {lit}, {pk_old}, {pk_new};
    END IF;
    NEW.cqrs_revision := OLD.cqrs_revision;
    NEW.cqrs_updated := OLD.cqrs_updated;
    IF NEW::text IS NOT DISTINCT FROM OLD::text THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS ({pending_old}) THEN
        NEW.cqrs_revision := OLD.cqrs_revision + 1;
        NEW.cqrs_updated := clock_timestamp();
    END IF;
    RETURN NEW;
END
",
        pending_old = pending("OLD"),
        pk_new = pk_text("NEW"),
        pk_old = pk_text("OLD"),
    );

    // A key with a pending row of the transaction was deleted earlier in it (a row created and
    // deleted leaves none): found by the unique index instead of a lookup per row.
    let inserted = format!(
        "
DECLARE
    queued bigint;
BEGIN
    {insert_into}
    SELECT gen_random_uuid(), {lit}, 'SAVE', {pk}, {lit}, {body}, txid_current(), NULL
    FROM cqrs_new AS n
    {on_conflict} DO NOTHING;
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued < (SELECT count(*) FROM cqrs_new) THEN
        RAISE EXCEPTION 'cqrs: a % key deleted earlier in this transaction was inserted again: re-creating it in the same transaction is not captured', {lit};
    END IF;
    RETURN NULL;
END
",
        pk = pk_text("n"),
        body = body(
            "SAVE",
            &data("n"),
            &created_previous(&tracked_json("n")),
            &key_json("n")
        ),
    );

    let previous = if tracked.is_empty() {
        "NULL::jsonb".to_string()
    } else {
        format!(
            "CASE WHEN c.first_old IS NULL THEN {created} ELSE \
             (SELECT COALESCE(jsonb_object_agg(p.key, p.value), '{{}}'::jsonb) FROM jsonb_each(c.first_old) AS p \
             WHERE p.value IS DISTINCT FROM c.now_tracked -> p.key) END",
            created = created_previous("c.now_tracked")
        )
    };
    let updated = format!(
        "
BEGIN
    {insert_into}
    SELECT gen_random_uuid(), {lit}, 'SAVE', c.pk, {lit}, {body}, txid_current(), c.first_old
    FROM (
        SELECT {pk_n} AS pk, {key_n} AS key, {data_n} AS data, {tracked_n} AS now_tracked,
               CASE WHEN e.id IS NULL THEN {tracked_o} ELSE e.capture_previous END AS first_old
        FROM cqrs_new AS n
        JOIN cqrs_old AS o ON o.{key} = n.{key}
        LEFT JOIN cqrs_outbox AS e
            ON e.capture_tx = txid_current() AND e.cqrs_id = {lit} AND e.pk = {pk_n}
        WHERE n::text IS DISTINCT FROM o::text
    ) AS c
    {on_conflict}
    DO UPDATE SET body = EXCLUDED.body, capture_previous = EXCLUDED.capture_previous;
    RETURN NULL;
END
",
        body = body("SAVE", "c.data", &previous, "c.key"),
        pk_n = pk_text("n"),
        key_n = key_json("n"),
        data_n = data("n"),
        tracked_n = tracked_json("n"),
        tracked_o = tracked_json("o"),
    );

    let delete_data = format!(
        "jsonb_build_object('id', {key_o}, 'cqrs_revision', \
         CASE WHEN e.id IS NULL THEN o.cqrs_revision + 1 ELSE o.cqrs_revision END, \
         'cqrs_updated', cqrs_json_timestamptz(clock_timestamp()))",
        key_o = key_json("o")
    );
    let deleted = format!(
        "
BEGIN
    -- Rows the transaction changed keep their bumped revision; the others take revision + 1.
    -- Rows it created are skipped here and their pending SAVE removed below: nothing is sent.
    {insert_into}
    SELECT gen_random_uuid(), {lit}, 'DELETE', {pk_o}, {lit}, {body}, txid_current(), '{{}}'::jsonb
    FROM cqrs_old AS o
    LEFT JOIN cqrs_outbox AS e
        ON e.capture_tx = txid_current() AND e.cqrs_id = {lit} AND e.pk = {pk_o}
    WHERE e.id IS NULL OR e.capture_previous IS NOT NULL
    {on_conflict}
    DO UPDATE SET signal_type = 'DELETE', body = EXCLUDED.body, capture_previous = EXCLUDED.capture_previous;
    DELETE FROM cqrs_outbox AS e USING cqrs_old AS o
    WHERE e.capture_tx = txid_current() AND e.cqrs_id = {lit} AND e.pk = {pk_o}
      AND e.capture_previous IS NULL;
    RETURN NULL;
END
",
        pk_o = pk_text("o"),
        body = body("DELETE", &delete_data, "NULL::jsonb", &key_json("o")),
    );

    let truncate = format!(
        "
BEGIN
    RAISE EXCEPTION 'cqrs: TRUNCATE of % is not captured (replicas would keep the rows): DELETE them, or truncate with the trigger disabled and run `cqrs sync`', {table_lit};
END
",
        table_lit = literal(&table)
    );

    let bodies = [stamp, inserted, updated, deleted, truncate];
    Ok(Generated {
        functions: TRIGGERS
            .iter()
            .zip(bodies)
            .map(|((what, _), body)| (function_name(&table, what), body))
            .collect(),
        table,
    })
}

/// `'wire', <value>` for column `c` of row `r`.
fn column_pair(spec: &MasterSpec, c: usize, r: &str) -> String {
    let col = &spec.table().columns()[c];
    format!(
        "{}, {}",
        literal(&col.wire),
        value_expr(col.ty, &format!("{r}.{}", quote(&col.name)))
    )
}

/// The wire form of a column's value as `jsonb` (SQL NULL for NULL): what
/// [`SqlValue::to_json`](crate::value::SqlValue::to_json) writes for it.
pub fn value_expr(ty: ColumnType, expr: &str) -> String {
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

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
