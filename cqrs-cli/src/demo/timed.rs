//! A [`Replica`] that applies through the table engine and records how long each applied change
//! took from its capture on the master (`cqrs_updated`) to its apply: the demo's commit -> apply
//! latency, kept by the run that owns it rather than in a global.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use cqrs::{
    BatchReport, Change, Db, Error, Message, Outcome, Replica, Retry, TableReplica, TableSpec,
};

/// Latencies in microseconds, shared between the consumer's replica and the run that reports them.
#[derive(Clone, Default)]
pub(crate) struct Latencies(Arc<Mutex<Vec<i64>>>);

impl Latencies {
    fn record(&self, micros: impl IntoIterator<Item = i64>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(micros);
    }

    /// The `p`th percentile (0.0 to 1.0) of what was recorded; zero if nothing was.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        l.sort_unstable();
        let i = ((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1));
        Duration::from_micros(l.get(i).copied().unwrap_or(0).max(0) as u64)
    }
}

/// The table replica, timed.
pub(crate) struct Timed {
    pub(crate) inner: TableReplica,
    pub(crate) latencies: Latencies,
}

impl Replica for Timed {
    fn cqrs_id(&self) -> &str {
        self.inner.cqrs_id()
    }

    fn depends_on(&self) -> Vec<String> {
        self.inner.depends_on()
    }

    fn apply(&self, db: &mut Db, changes: &[&Change]) -> cqrs::Result<BatchReport> {
        let report = self.inner.apply(db, changes)?;
        let now = Utc::now();
        self.latencies.record(
            changes
                .iter()
                .zip(&report.outcomes)
                .filter(|(_, o)| matches!(o, Outcome::Applied))
                .filter_map(|(c, _)| c.message.updated().ok())
                .map(|t| (now - t).num_microseconds().unwrap_or(0)),
        );
        Ok(report)
    }

    fn table(&self) -> Option<&TableSpec> {
        self.inner.table()
    }

    fn instance_pk(&self, data: &cqrs::InstanceData) -> Option<serde_json::Value> {
        self.inner.instance_pk(data)
    }

    fn clear(&self, db: &mut Db) -> cqrs::Result<()> {
        self.inner.clear(db)
    }

    fn retry(&self, message: &Message, error: &Error) -> Retry {
        self.inner.retry(message, error)
    }
}
