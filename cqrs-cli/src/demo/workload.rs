//! What the demo's application does on the master, through the capture API: creates in
//! transactions of 50, updates of every other row, a bulk delete and a directed sync.

use cqrs::db::{Db, SqlConn};
use cqrs::value::SqlValue;
use cqrs::{Error, atomic};

use super::models::{DemoItem, statements};

/// Rows created per transaction.
const PER_TRANSACTION: usize = 50;

/// Run the workload on `master` for `rows` rows; returns how many messages it captured.
pub(crate) fn run(
    master: &mut Db,
    rows: usize,
    queue: &str,
    progress: &mut dyn FnMut(&str),
) -> cqrs::Result<usize> {
    let ids = create(master, rows, progress)?;
    let updated = update_every_other(master, &ids, progress)?;
    let doomed: Vec<i64> = ids.iter().copied().filter(|id| id % 10 == 3).collect();
    atomic(master, |tx| tx.delete_many::<DemoItem>(&doomed))?;
    progress(&format!("deleted {} rows", doomed.len()));
    let synced: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| id % 10 != 3)
        .take(5)
        .collect();
    atomic(master, |tx| {
        for id in &synced {
            tx.sync::<DemoItem>(id, Some(queue))?;
        }
        Ok(())
    })?;
    Ok(ids.len() + updated + doomed.len() + synced.len())
}

fn create(master: &mut Db, rows: usize, progress: &mut dyn FnMut(&str)) -> cqrs::Result<Vec<i64>> {
    let (insert, _) = statements(master);
    let mut ids: Vec<i64> = Vec::with_capacity(rows);
    for chunk in 0..rows.div_ceil(PER_TRANSACTION) {
        let n = PER_TRANSACTION.min(rows - chunk * PER_TRANSACTION);
        let created = atomic(master, |tx| {
            (0..n)
                .map(|i| {
                    let k = chunk * PER_TRANSACTION + i;
                    let price = SqlValue::Numeric(
                        format!("{}.{:02}", 1 + k % 97, k % 100)
                            .parse()
                            .expect("a decimal"),
                    );
                    tx.create_with::<DemoItem, i64, Error>(|c| {
                        let row = c.load_text(
                            insert,
                            vec![
                                SqlValue::Text(format!("item {k}")),
                                price,
                                SqlValue::Integer((k % 17) as i32),
                            ],
                        )?;
                        Ok(row[0].parse().expect("an id"))
                    })
                })
                .collect::<cqrs::Result<Vec<i64>>>()
        })?;
        ids.extend(created);
        if chunk % 10 == 0 {
            progress(&format!("created {} of {rows} rows", ids.len()));
        }
    }
    Ok(ids)
}

/// One transaction per update, as a web request would; returns how many rows were updated.
fn update_every_other(
    master: &mut Db,
    ids: &[i64],
    progress: &mut dyn FnMut(&str),
) -> cqrs::Result<usize> {
    let (_, update) = statements(master);
    let mut n = 0;
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        atomic(master, |tx| {
            tx.update_with::<DemoItem, usize, Error>(id, |c| {
                c.exec(update, vec![SqlValue::BigInt(*id)])
            })
        })?;
        n += 1;
        if i % 500 == 0 {
            progress(&format!("updated {} rows", i / 2));
        }
    }
    Ok(n)
}
