//! Trigger capture on PostgreSQL (`#[cqrs(capture = "trigger")]`): PL/pgSQL generated from a master
//! model's spec that captures every write to its table, whoever makes it (psql, `COPY`, a bulk
//! `UPDATE`, another service), keeping the rules [`atomic`](super::atomic) keeps
//! (ARCHITECTURE.md §4):
//!
//! - `cqrs_<table>_stamp`, BEFORE INSERT OR UPDATE OR DELETE, per row, fired after the
//!   application's own BEFORE triggers (its name sorts last; `install` refuses a table with one
//!   sorting after it). The first change of a row in a transaction writes its *claim*: the
//!   outbox row keyed by (transaction, cqrs_id, pk), there before any statement the change sets
//!   off runs. An update that changes the row gets revision + 1 and `cqrs_updated` now when it
//!   writes the claim, the values it had otherwise (a client's own never count; an update that
//!   changes nothing stays one). An insert gets revision 0 and `cqrs_updated` now, after waiting
//!   for any transaction deleting the same key. A delete writes its DELETE (the last published
//!   revision + 1), or removes the claim of a row created in the transaction (nothing is sent).
//!   A key deleted and inserted again in one transaction continues at the DELETE's revision: to
//!   the replicas, an update.
//! - `cqrs_<table>_inserted`, `_updated`, AFTER, per statement: each claimed row's body, read
//!   from the table as it is now (a statement run inside this one may have changed the row since),
//!   `previous_data` from the tracked values before the transaction's first change. They run
//!   with `extra_float_digits = 1`, so a body does not depend on the writer's session.
//! - `cqrs_<table>_truncate`, BEFORE TRUNCATE: refused (no row-level record of what went).
//!
//! Values are written by the `cqrs_json_*` functions of the migrations, in the forms the Rust
//! encoder writes; the relay reads the body like any other. One table has one trigger-captured
//! model: `install` refuses a second.

use super::in_sql::{Bodies, literal};
use crate::db::{Backend, SqlConn};
use crate::error::{Error, Result};
use crate::model::{CaptureMode, MasterSpec};
use crate::rows::quote;
use crate::value::SqlValue;

/// PostgreSQL's identifier limit: a longer name would be cut, and `check` would not find it.
const MAX_NAME: usize = 63;

/// The functions (and their triggers) of one model, by name, with their bodies.
struct Generated {
    table: String,
    functions: Vec<(String, String)>,
}

/// When each function's trigger fires.
const TRIGGERS: [(&str, &str); 4] = [
    (
        "stamp",
        "BEFORE INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW",
    ),
    (
        "inserted",
        "AFTER INSERT ON {t} REFERENCING NEW TABLE AS cqrs_new FOR EACH STATEMENT",
    ),
    (
        "updated",
        "AFTER UPDATE ON {t} REFERENCING NEW TABLE AS cqrs_new FOR EACH STATEMENT",
    ),
    ("truncate", "BEFORE TRUNCATE ON {t} FOR EACH STATEMENT"),
];

/// The line in the stamp's body that says which version of trigger capture installed it: the
/// triggers of an earlier one are refused until `cqrs triggers install` runs again.
const CAPTURE_VERSION: &str = "cqrs capture 2";

/// Triggers of earlier versions, dropped by `install` and `uninstall`.
const RETIRED: [&str; 1] = ["deleted"];

/// The session settings a function runs with, as `pg_proc.proconfig` lists them: the statement
/// triggers write floats, and the stamp the tracked values before a change, whose text depends on
/// `extra_float_digits`.
fn settings(what: &str) -> Option<&'static str> {
    matches!(what, "stamp" | "inserted" | "updated").then_some("extra_float_digits=1")
}

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
    let mut sql = retired_sql(&g.table);
    for ((name, body), (what, _)) in g.functions.iter().zip(TRIGGERS) {
        let set =
            settings(what).map_or(String::new(), |s| format!(" SET {}", s.replace('=', " = ")));
        sql.push_str(&format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql{set} AS $cqrs${body}$cqrs$;\n",
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

/// `DROP` of the triggers and functions of `whats` on `table`.
fn drop_sql<'a>(table: &str, whats: impl IntoIterator<Item = &'a str>) -> String {
    whats
        .into_iter()
        .map(|what| {
            format!(
                "DROP TRIGGER IF EXISTS {tg} ON {t};\nDROP FUNCTION IF EXISTS {f}();\n",
                tg = quote(&trigger_name(table, what)),
                f = quote(&function_name(table, what)),
                t = quote(table)
            )
        })
        .collect()
}

fn retired_sql(table: &str) -> String {
    drop_sql(table, RETIRED)
}

/// The script that removes the triggers of a model's table and their functions (back to capture
/// by `atomic`); whatever the model's capture mode is now.
pub fn uninstall_sql(spec: &MasterSpec) -> Result<String> {
    let table = spec.table().table();
    Ok(drop_sql(
        table,
        TRIGGERS.iter().map(|(what, _)| *what).chain(RETIRED),
    ))
}

/// Remove a model's triggers, in one transaction. Refused when the table's triggers belong to
/// another model.
pub fn uninstall<C: SqlConn + ?Sized>(conn: &mut C, spec: &MasterSpec) -> Result<()> {
    postgres_only(conn, spec)?;
    if let Some(other) = installed_for_other(conn, spec)? {
        return Err(other_model(spec, &other));
    }
    let sql = uninstall_sql(spec)?;
    crate::db::in_transaction(conn, |c| c.exec_script(&sql))
}

/// Install (or replace) a model's triggers, in one transaction. Refused when another model's
/// triggers capture the table (both would stamp the same rows, and each replace the other's
/// functions), or when one of the application's BEFORE row triggers fires after the stamp (a
/// change it made would go out at a revision the replicas already have).
pub fn install<C: SqlConn + ?Sized>(conn: &mut C, spec: &MasterSpec) -> Result<()> {
    postgres_only(conn, spec)?;
    if let Some(other) = installed_for_other(conn, spec)? {
        return Err(other_model(spec, &other));
    }
    if let Some(problem) = late_before_triggers(conn, spec)? {
        return Err(Error::config(problem));
    }
    let sql = install_sql(spec)?;
    crate::db::in_transaction(conn, |c| c.exec_script(&sql))
}

/// What differs between a model and the triggers installed for it: a missing or changed function
/// (the model's columns changed since `install`), a missing or disabled trigger, another model's
/// triggers on the table, an application BEFORE row trigger firing after the stamp. Empty: in step.
pub fn check<C: SqlConn + ?Sized>(conn: &mut C, spec: &MasterSpec) -> Result<Vec<String>> {
    postgres_only(conn, spec)?;
    let g = generate(spec)?;
    let mut problems = Vec::new();
    if let Some(other) = installed_for_other(conn, spec)? {
        problems.push(other_model(spec, &other).to_string());
    }
    for ((name, body), (what, _)) in g.functions.iter().zip(TRIGGERS) {
        let trigger = trigger_name(&g.table, what);
        let installed = conn.load_text(
            "SELECT p.prosrc || '|' || COALESCE(array_to_string(p.proconfig, ','), '') AS j FROM pg_proc p \
             WHERE p.proname = $1 AND p.pronamespace = current_schema()::regnamespace",
            vec![SqlValue::Text(name.clone())],
        )?;
        let expected = format!("{body}|{}", settings(what).unwrap_or(""));
        match installed.first() {
            None => problems.push(format!("function {name}() is not installed")),
            Some(src) if *src != expected => problems.push(format!(
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
    problems.extend(late_before_triggers(conn, spec)?);
    Ok(problems)
}

/// The cqrs_id whose triggers capture the model's table, when it is another model's.
fn installed_for_other<C: SqlConn + ?Sized>(
    conn: &mut C,
    spec: &MasterSpec,
) -> Result<Option<String>> {
    let table = spec.table().table();
    let found = conn.load_text(
        "SELECT p.prosrc AS j FROM pg_proc p WHERE p.proname = $1 AND p.pronamespace = current_schema()::regnamespace",
        vec![SqlValue::Text(function_name(table, "stamp"))],
    )?;
    let Some(src) = found.first() else {
        return Ok(None);
    };
    let lit = literal(spec.table().cqrs_id());
    // Bodies name their model on their first line; those of earlier versions only in queries.
    if src.contains(&format!("-- cqrs model {lit}\n")) || src.contains(&format!("cqrs_id = {lit} "))
    {
        return Ok(None);
    }
    let other = src
        .lines()
        .find_map(|l| l.trim().strip_prefix("-- cqrs model "))
        .map_or_else(|| "another model".to_string(), |id| format!("model {id}"));
    Ok(Some(other))
}

fn other_model(spec: &MasterSpec, other: &str) -> Error {
    Error::config(format!(
        "table {} is captured by the triggers of {other}: one table has one trigger-captured model (capture the other with atomic, or uninstall its triggers first)",
        spec.table().table()
    ))
}

/// An application BEFORE row trigger on the model's table whose name sorts after the stamp's:
/// PostgreSQL fires them in name order, so it would change rows after the stamp decided.
fn late_before_triggers<C: SqlConn + ?Sized>(
    conn: &mut C,
    spec: &MasterSpec,
) -> Result<Option<String>> {
    let table = spec.table().table();
    let stamp = trigger_name(table, "stamp");
    let late = conn.load_text(
        "SELECT t.tgname::text AS j FROM pg_trigger t WHERE t.tgrelid = to_regclass($1) AND NOT t.tgisinternal \
         AND (t.tgtype & 67) = 3 AND t.tgname::text COLLATE \"C\" > $2 COLLATE \"C\" ORDER BY 1",
        vec![SqlValue::Text(quote(table)), SqlValue::Text(stamp.clone())],
    )?;
    Ok((!late.is_empty()).then(|| {
        format!(
            "table {table} has BEFORE row trigger(s) {} firing after {stamp} (PostgreSQL fires them in name order): a change they make would not be stamped; rename them to sort before it",
            late.join(", ")
        )
    }))
}

/// True when the database's triggers capture this model's writes, so `atomic` must not.
pub(crate) fn captures(spec: &MasterSpec, backend: Backend) -> bool {
    spec.capture_mode() == CaptureMode::Trigger && backend == Backend::Postgres
}

/// Fails unless the table's triggers are installed and enabled, and none of the application's
/// BEFORE row triggers fires after the stamp: without them, writes to a
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
    binds.push(SqlValue::Text(trigger_name(table, "stamp")));
    binds.push(SqlValue::Text(function_name(table, "stamp")));
    binds.push(SqlValue::Text(format!("%-- {CAPTURE_VERSION}\n%")));
    // Ours enabled, of this version, and none of the application's BEFORE row triggers after
    // the stamp.
    let found = conn.load_text(
        "SELECT CAST(count(*) FILTER (WHERE t.tgname IN ($2, $3, $4, $5) AND t.tgenabled IN ('O', 'A')) AS TEXT) \
         || ':' || CAST(count(*) FILTER (WHERE NOT t.tgisinternal AND (t.tgtype & 67) = 3 \
         AND t.tgname::text COLLATE \"C\" > $6 COLLATE \"C\") AS TEXT) \
         || ':' || CAST(EXISTS (SELECT 1 FROM pg_proc p WHERE p.proname = $7 \
         AND p.pronamespace = current_schema()::regnamespace AND p.prosrc LIKE $8) AS TEXT) AS j \
         FROM pg_trigger t WHERE t.tgrelid = to_regclass($1)",
        binds,
    )?;
    let cqrs_id = spec.table().cqrs_id();
    match found.first().map(String::as_str) {
        Some("4:0:true") => Ok(()),
        Some(counts) if counts.starts_with("4:0:") => Err(Error::config(format!(
            "master `{cqrs_id}`: the triggers on table {table} were installed by an earlier version of cqrs: run `cqrs triggers install` again"
        ))),
        Some(counts) if counts.starts_with("4:") => Err(Error::config(
            late_before_triggers(conn, spec)?.unwrap_or_else(|| counts.to_string()),
        )),
        _ => Err(Error::config(format!(
            "master `{cqrs_id}` is captured by triggers (capture = \"trigger\") but table {table} does not have its {} enabled: run `cqrs triggers install` (`cqrs triggers check` says which)",
            TRIGGERS.len()
        ))),
    }
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
    let b = Bodies::new(spec);
    let lit = b.lit().to_string();
    let key = quote(&t.key_column().name);
    let key_json = |r: &str| b.key_json(r);
    let pk_text = |r: &str| b.pk_text(r);
    let tracked_json = |r: &str| b.tracked_json(r);
    let data = |r: &str| b.data(r);
    let claim_of =
        |pk: &str| format!("capture_tx = txid_current() AND cqrs_id = {lit} AND pk = {pk}");
    let body =
        |signal: &str, data: &str, previous: &str, key: &str| b.body(signal, data, previous, key);
    let previous = |first_old: &str, now: &str| b.previous(first_old, now);
    let insert_into = "INSERT INTO cqrs_outbox (message_id, cqrs_id, signal_type, pk, routing_key, body, capture_tx, capture_previous)";
    let on_conflict = "ON CONFLICT (capture_tx, cqrs_id, pk) WHERE capture_tx IS NOT NULL";
    let delete_body = |revision: &str| {
        body(
            "DELETE",
            &format!(
                "jsonb_build_object('id', {key_o}, 'cqrs_revision', {revision}, \
                 'cqrs_updated', cqrs_json_timestamptz(clock_timestamp()))",
                key_o = key_json("OLD")
            ),
            "NULL::jsonb",
            &key_json("OLD"),
        )
    };
    let table_q = quote(&table);

    // The transaction's record of a row is its claim: the outbox row keyed by (transaction,
    // cqrs_id, pk), written by this row trigger the moment the row first changes, so a statement
    // run inside this one (an application trigger writing back to the row) sees it. Its body is
    // written by the statement triggers below; `capture_previous` is NULL for a row created in
    // the transaction, else the tracked values from before its first change.
    let stamp = format!(
        "
-- cqrs model {lit}
-- {CAPTURE_VERSION}
DECLARE
    claim record;
    recreated boolean := false;
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- Tells inserts to look for a DELETE of their key (undone with a savepoint rolled back).
        IF current_setting('cqrs.deleted', true) IS DISTINCT FROM 'on' THEN
            PERFORM set_config('cqrs.deleted', 'on', true);
        END IF;
        {insert_into}
        VALUES (gen_random_uuid(), {lit}, 'DELETE', {pk_old}, {lit}, {delete_first}, txid_current(), {tracked_old})
        {on_conflict} DO NOTHING;
        IF NOT FOUND THEN
            SELECT e.id, e.capture_previous INTO claim FROM cqrs_outbox AS e WHERE {claim_old};
            IF claim.capture_previous IS NULL THEN
                -- Created in this transaction: the replicas never heard of it.
                DELETE FROM cqrs_outbox WHERE id = claim.id;
            ELSE
                -- Changed earlier in it: the DELETE keeps the revision that change took.
                UPDATE cqrs_outbox SET signal_type = 'DELETE', body = {delete_again} WHERE id = claim.id;
            END IF;
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- A transaction deleting this key holds its row until it ends: wait for it, so this row's
        -- stamp is later than that DELETE's (a replica re-creates a key by comparing the two).
        -- Only when such a row is there: inserting a new key takes no lock (nor UPDATE privilege).
        IF EXISTS (SELECT 1 FROM {table_q} WHERE {key} = NEW.{key}) THEN
            PERFORM 1 FROM {table_q} WHERE {key} = NEW.{key} FOR KEY SHARE;
        END IF;
        NEW.cqrs_revision := 0;
        NEW.cqrs_updated := clock_timestamp();
        IF current_setting('cqrs.deleted', true) IS NOT DISTINCT FROM 'on' THEN
            SELECT e.id, e.body INTO claim FROM cqrs_outbox AS e WHERE {claim_new} AND e.signal_type = 'DELETE';
            recreated := FOUND;
        END IF;
        IF recreated THEN
            -- Deleted earlier in this transaction and inserted again: to the replicas an update,
            -- at the revision its DELETE would have had. The claim stays a DELETE until the row is
            -- in (the statement trigger turns it into a SAVE): an INSERT .. ON CONFLICT may skip it.
            NEW.cqrs_revision := (claim.body::jsonb -> 'instance_data' ->> 'cqrs_revision')::integer;
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.{key} IS DISTINCT FROM OLD.{key} THEN
        RAISE EXCEPTION 'cqrs: changing the primary key of a % row (% to %) is not captured: delete the row and insert it', {lit}, {pk_old}, {pk_new};
    END IF;
    NEW.cqrs_revision := OLD.cqrs_revision;
    NEW.cqrs_updated := OLD.cqrs_updated;
    -- Binary images: no session setting (extra_float_digits, DateStyle) changes the answer.
    IF NEW *= OLD THEN
        RETURN NEW;
    END IF;
    {insert_into}
    VALUES (gen_random_uuid(), {lit}, 'SAVE', {pk_old}, {lit}, '', txid_current(), {tracked_old})
    {on_conflict} DO NOTHING;
    IF FOUND THEN
        NEW.cqrs_revision := OLD.cqrs_revision + 1;
        NEW.cqrs_updated := clock_timestamp();
    END IF;
    RETURN NEW;
END
",
        claim_old = claim_of(&pk_text("OLD")),
        claim_new = claim_of(&pk_text("NEW")),
        delete_first = delete_body("OLD.cqrs_revision + 1"),
        delete_again = delete_body("OLD.cqrs_revision"),
        pk_new = pk_text("NEW"),
        pk_old = pk_text("OLD"),
        tracked_old = tracked_json("OLD"),
    );

    // The rows of a statement, as they are now in the table (not as the transition table holds
    // them: a statement run inside this one may have changed them since; one it deleted is gone).
    let current = |extra: &str| {
        format!(
            "SELECT {pk_r} AS pk, {key_r} AS key, {data_r} AS data, {tracked_r} AS now_tracked{extra}
        FROM cqrs_new AS n JOIN {table_q} AS r ON r.{key} = n.{key}",
            pk_r = pk_text("r"),
            key_r = key_json("r"),
            data_r = data("r"),
            tracked_r = tracked_json("r"),
        )
    };

    // A SAVE of a row of `current`, `previous_data` from the claim's tracked values `first_old`.
    let save_body = |first_old: &str| {
        body(
            "SAVE",
            "c.data",
            &previous(first_old, "c.now_tracked"),
            "c.key",
        )
    };

    // A claim already there for an inserted key: the DELETE of a key deleted and inserted again
    // (a SAVE now, keeping the tracked values from before the transaction), or the claim of a row
    // a statement inside this one changed after it was inserted (created all the same).
    let inserted = format!(
        "
-- cqrs model {lit}
BEGIN
    {insert_into}
    SELECT gen_random_uuid(), {lit}, 'SAVE', c.pk, {lit}, {body}, txid_current(), c.first_old
    FROM (
        {current}
        LEFT JOIN cqrs_outbox AS e ON e.capture_tx = txid_current() AND e.cqrs_id = {lit}
            AND e.pk = {pk_r} AND e.signal_type = 'DELETE'
    ) AS c
    {on_conflict}
    DO UPDATE SET signal_type = 'SAVE', body = EXCLUDED.body, capture_previous = EXCLUDED.capture_previous;
    RETURN NULL;
END
",
        body = save_body("c.first_old"),
        current = current(", e.capture_previous AS first_old"),
        pk_r = pk_text("r"),
    );

    // Rows the statement changed have their claims (the stamp wrote them); a row it left as it
    // was has none, unless changed earlier in the transaction.
    let updated = format!(
        "
-- cqrs model {lit}
BEGIN
    UPDATE cqrs_outbox AS e SET body = {body}
    FROM ({current}) AS c
    WHERE e.capture_tx = txid_current() AND e.cqrs_id = {lit} AND e.pk = c.pk AND e.signal_type = 'SAVE';
    RETURN NULL;
END
",
        body = save_body("e.capture_previous"),
        current = current(""),
    );

    let truncate = format!(
        "
-- cqrs model {lit}
BEGIN
    RAISE EXCEPTION 'cqrs: TRUNCATE of % is not captured (replicas would keep the rows): DELETE them, or truncate with the trigger disabled and run `cqrs sync`', {table_lit};
END
",
        table_lit = literal(&table)
    );

    let bodies = [stamp, inserted, updated, truncate];
    Ok(Generated {
        functions: TRIGGERS
            .iter()
            .zip(bodies)
            .map(|((what, _), body)| (function_name(&table, what), body))
            .collect(),
        table,
    })
}
