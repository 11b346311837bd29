//! What a capture writes at commit: the final state of every touched row, read in one query per
//! model, turned into django-cqrs messages (SAVE, DELETE, SYNC) and outbox rows.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{State, Tx, missing, now, push_list};
use crate::db::SqlConn;
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Message, SignalType};
use crate::model::MasterSpec;
use crate::outbox::NewRow;
use crate::rows::{self, quote};
use crate::transport::routing::directed_key;
use crate::value::SqlValue;

impl<'c, C: SqlConn + ?Sized> Tx<'c, C> {
    /// Read the final states of every touched row (one query per model) and build the messages.
    pub(super) fn final_rows(&mut self) -> Result<Vec<NewRow>> {
        super::foreign::settle(self.conn, &self.cap)?;
        let cap = self.cap.clone();
        let cap = cap.borrow();
        // Per model: rows created here (stamped and read back by one UPDATE ... RETURNING) and
        // rows only read (updated or synced).
        let mut wanted: BTreeMap<&str, (Vec<SqlValue>, Vec<SqlValue>)> = BTreeMap::new();
        for (id, canon) in &cap.order {
            let t = &cap.touched[&(id.clone(), canon.clone())];
            let (created, read) = wanted.entry(id.as_str()).or_default();
            match t.state {
                State::Created => created.push(t.key.clone()),
                State::Updated { .. } => read.push(t.key.clone()),
                State::Deleted { .. } => {}
            }
        }
        for s in &cap.syncs {
            wanted
                .entry(s.cqrs_id.as_str())
                .or_default()
                .1
                .push(s.key.clone());
        }
        let mut finals: BTreeMap<(String, String), Vec<Option<SqlValue>>> = BTreeMap::new();
        let backend = self.conn.backend();
        let stamp = SqlValue::Timestamptz(now());
        for (id, (mut created, mut read)) in wanted {
            for keys in [&mut created, &mut read] {
                keys.sort_by_key(SqlValue::canonical_key);
                keys.dedup();
            }
            read.retain(|k| {
                created
                    .binary_search_by_key(&k.canonical_key(), SqlValue::canonical_key)
                    .is_err()
            });
            let t = cap.specs[id].table().clone();
            let json = rows::json_expr(backend, &t, rows::all_columns(&t));
            let mut statements = Vec::new();
            for chunk in created.chunks(backend.bind_limit() - 1) {
                let mut sql = format!(
                    "UPDATE {} SET cqrs_revision = 0, cqrs_updated = ",
                    quote(t.table())
                );
                backend.placeholder(1, &mut sql);
                sql.push_str(&format!(" WHERE {}", quote(&t.key_column().name)));
                let mut binds = vec![stamp.clone()];
                push_list(backend, &mut sql, &mut binds, 2, &t, chunk)?;
                sql.push_str(&format!(" RETURNING {json}"));
                statements.push((sql, binds, Some(chunk.len())));
            }
            for chunk in read.chunks(backend.bind_limit()) {
                let mut sql = format!(
                    "SELECT {json} FROM {} WHERE {}",
                    quote(t.table()),
                    quote(&t.key_column().name)
                );
                let mut binds = Vec::new();
                push_list(backend, &mut sql, &mut binds, 1, &t, chunk)?;
                statements.push((sql, binds, None));
            }
            for (sql, binds, created) in statements {
                let texts = self.conn.load_text(&sql, binds)?;
                if let Some(wanted) = created
                    && texts.len() != wanted
                {
                    return Err(missing(id, "created", wanted, texts.len()));
                }
                for text in texts {
                    let row = rows::typed_row(&t, &text)?;
                    let canon = row[t.key_index()]
                        .as_ref()
                        .expect("key selected")
                        .canonical_key();
                    finals.insert((id.to_string(), canon), row);
                }
            }
        }

        // A row this transaction bumped whose revision the application's own writes put back
        // (a struct changeset with the revision it read): capture's revision is the one sent.
        for (k, touch) in &cap.touched {
            if let State::Updated { revision, .. } = touch.state
                && let Some(row) = finals.get_mut(k)
            {
                let t = cap.specs[k.0.as_str()].table();
                if super::revision_of(t, row) != revision {
                    self.fix_revision(t, touch.key.clone(), revision)?;
                    row[t.revision_index()] = Some(SqlValue::Integer(revision));
                }
            }
        }
        let mut out = Vec::new();
        for k in &cap.order {
            let touch = &cap.touched[k];
            let spec = &cap.specs[k.0.as_str()];
            if !spec.produces() {
                continue;
            }
            let t = spec.table();
            let message = match &touch.state {
                State::Deleted {
                    revision,
                    updated,
                    last,
                } => {
                    // As django-cqrs's post_delete: a row the filter hides is not announced gone.
                    if let Some(filter) = spec.hooks_ref().filter
                        && !filter(last)
                    {
                        continue;
                    }
                    let mut data = Map::new();
                    data.insert("id".into(), touch.key.to_json());
                    data.insert("cqrs_revision".into(), (*revision).into());
                    data.insert(
                        "cqrs_updated".into(),
                        Value::String(crate::message::format_datetime(updated)),
                    );
                    if let Some(custom) = spec.hooks_ref().delete_custom.and_then(|f| f(last)) {
                        data.insert("custom".into(), custom);
                    }
                    let mut m =
                        Message::new(SignalType::Delete, t.cqrs_id(), touch.key.to_json(), data);
                    if let Some(meta) = spec.hooks_ref().meta {
                        m.meta = meta(last);
                    }
                    m
                }
                state => {
                    let Some(row) = finals.get(k) else {
                        // Its DELETE (or its new key's SAVE) would be sent by nobody.
                        return Err(Error::config(format!(
                            "{} pk {} was changed in this transaction but is gone at commit: it was deleted, or its primary key changed, outside capture (delete with tx.delete or tx.delete_key; primary keys cannot change)",
                            k.0, k.1
                        )));
                    };
                    let mut data = rows::instance_data(t, row);
                    if let Some(serialize) = spec.hooks_ref().serializer {
                        serialize(self.conn.as_dyn(), &mut data)?;
                    }
                    if let Some(filter) = spec.hooks_ref().filter
                        && !filter(&data)
                    {
                        continue;
                    }
                    let previous = previous_data(spec, state, row);
                    let mut m =
                        Message::new(SignalType::Save, t.cqrs_id(), touch.key.to_json(), data);
                    m.previous_data = previous;
                    if let Some(meta) = spec.hooks_ref().meta {
                        m.meta = meta(&m.instance_data);
                    }
                    m
                }
            };
            out.push(self.row(spec, message, touch.key.canonical_key(), None));
        }
        for s in &cap.syncs {
            let spec = &cap.specs[s.cqrs_id.as_str()];
            if !spec.produces() {
                continue;
            }
            let canon = s.key.canonical_key();
            let Some(row) = finals.get(&(s.cqrs_id.clone(), canon.clone())) else {
                if s.skip_missing {
                    tracing::warn!(cqrs_id = %s.cqrs_id, pk = %canon, "row deleted before its SYNC was captured: skipped");
                    continue;
                }
                return Err(Error::new(
                    ErrorKind::Database,
                    format!("cannot sync {} pk {canon}: no such row", s.cqrs_id),
                ));
            };
            let mut data = rows::instance_data(spec.table(), row);
            if let Some(serialize) = spec.hooks_ref().serializer {
                serialize(self.conn.as_dyn(), &mut data)?;
            }
            if let Some(filter) = spec.hooks_ref().filter
                && !filter(&data)
            {
                continue;
            }
            let mut m = Message::new(SignalType::Sync, &s.cqrs_id, s.key.to_json(), data);
            if let Some(meta) = spec.hooks_ref().meta {
                m.meta = meta(&m.instance_data);
            }
            out.push(self.row(spec, m, canon, s.queue.as_deref()));
        }
        Ok(out)
    }

    fn row(&self, spec: &MasterSpec, mut m: Message, pk: String, queue: Option<&str>) -> NewRow {
        if let Some(cid) = spec.hooks_ref().correlation_id {
            m.correlation_id = cid(&crate::model::Correlation {
                signal_type: m.signal_type,
                cqrs_id: &m.cqrs_id,
                instance_pk: &m.instance_pk,
                queue,
            });
        }
        NewRow {
            message_id: uuid::Uuid::new_v4(),
            routing_key: queue.map_or_else(|| m.cqrs_id.clone(), |q| directed_key(q, &m.cqrs_id)),
            cqrs_id: m.cqrs_id.clone(),
            signal_type: m.signal_type,
            pk,
            body: String::from_utf8(m.encode()).expect("JSON is UTF-8"),
        }
    }
}

/// django-cqrs's `previous_data`: `null` without tracked fields; on create `{field: null}` for
/// tracked fields whose value is not null; on update the old value of each tracked field that changed.
fn previous_data(
    spec: &MasterSpec,
    state: &State,
    row: &[Option<SqlValue>],
) -> Option<Map<String, Value>> {
    let tracked: Vec<usize> = spec.tracked_indexes().collect();
    if tracked.is_empty() {
        return None;
    }
    let cols = spec.table().columns();
    let mut prev = Map::new();
    match state {
        State::Created => {
            for &c in &tracked {
                if row[c].as_ref().is_some_and(|v| !v.is_null()) {
                    prev.insert(cols[c].wire.clone(), Value::Null);
                }
            }
        }
        State::Updated { previous, .. } => {
            for (&c, old) in tracked.iter().zip(previous) {
                let (old, new) = (
                    old.as_ref().map(SqlValue::to_json),
                    row[c].as_ref().map(SqlValue::to_json),
                );
                if old != new {
                    prev.insert(cols[c].wire.clone(), old.unwrap_or(Value::Null));
                }
            }
        }
        State::Deleted { .. } => return None,
    }
    Some(prev)
}
