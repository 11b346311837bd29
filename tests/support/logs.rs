//! The JSON log lines code run on this thread writes, for tests of what logs say.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run `f` with a JSON subscriber at DEBUG on this thread (others are not captured): its
/// result and every line logged, parsed.
pub fn capture_json_logs<R>(f: impl FnOnce() -> R) -> (R, Vec<Value>) {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out, lines)
}

/// The first line whose message contains `text`.
pub fn log_line<'a>(lines: &'a [Value], text: &str) -> Option<&'a Value> {
    lines.iter().find(|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(text))
    })
}
