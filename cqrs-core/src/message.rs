//! The wire body shared with django-cqrs (PROTOCOL.md "Message body"): decode, encode, datetime forms.
//!
//! No I/O happens here. Decoding checks only the envelope (the nine top-level keys); whether
//! `instance_data` holds what a model needs is decided when it is applied, because django-cqrs
//! treats that as a retryable failure and an envelope error as a lost message (we dead-letter it).

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Timelike,
    Utc,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Default message time to live on the master, as django-cqrs: one day.
pub const DEFAULT_TTL_SECONDS: i64 = 86_400;

/// What a message asks the replica to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum SignalType {
    /// Create or update.
    #[serde(rename = "SAVE")]
    Save,
    /// Delete; `instance_data` is `{"id", "cqrs_revision", "cqrs_updated"}`.
    #[serde(rename = "DELETE")]
    Delete,
    /// A forced re-send of the current state, broadcast or directed to one replica.
    #[serde(rename = "SYNC")]
    Sync,
}

impl SignalType {
    /// The wire spelling: `SAVE`, `DELETE`, `SYNC`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalType::Save => "SAVE",
            SignalType::Delete => "DELETE",
            SignalType::Sync => "SYNC",
        }
    }

    /// Parse the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SAVE" => Some(SignalType::Save),
            "DELETE" => Some(SignalType::Delete),
            "SYNC" => Some(SignalType::Sync),
            _ => None,
        }
    }
}

/// The `expires` key: absent (an older master; the replica applies its default TTL), `null`
/// (never expires) or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    /// The key was not in the body.
    Absent,
    /// `null`: the message never expires.
    Never,
    /// An absolute expiry.
    At(DateTime<Utc>),
}

/// One django-cqrs message body.
///
/// ```
/// use cqrs::message::{Message, SignalType};
/// let body = br#"{"signal_type":"SAVE","cqrs_id":"item","instance_data":{"id":1,"cqrs_revision":0,
///   "cqrs_updated":"2026-11-23 14:17:38.255580+00:00"},"instance_pk":1}"#;
/// let msg = Message::decode(body).unwrap();
/// assert_eq!(msg.signal_type, SignalType::Save);
/// assert_eq!(msg.revision().unwrap(), 0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// SAVE, DELETE or SYNC.
    pub signal_type: SignalType,
    /// The model identifier shared by master and replicas.
    pub cqrs_id: String,
    /// The row's fields by wire name, with `cqrs_revision` and `cqrs_updated`.
    pub instance_data: Map<String, Value>,
    /// Old values of tracked fields, or `None` (`null`) when the model tracks none.
    pub previous_data: Option<Map<String, Value>>,
    /// The master's primary key as sent (an integer or a string).
    pub instance_pk: Value,
    /// Optional trace id.
    pub correlation_id: Option<String>,
    /// How many times a replica re-queued this message for retry.
    pub retries: u32,
    /// When the message expires.
    pub expires: Expires,
    /// Free-form metadata (`{}` by default on our master, `null` when absent on receipt).
    pub meta: Value,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Message {
    /// A new message with `retries` 0, no expiry set yet (the relay sets it) and empty `meta`.
    pub fn new(
        signal_type: SignalType,
        cqrs_id: impl Into<String>,
        instance_pk: Value,
        instance_data: Map<String, Value>,
    ) -> Self {
        Message {
            signal_type,
            cqrs_id: cqrs_id.into(),
            instance_data,
            previous_data: None,
            instance_pk,
            correlation_id: None,
            retries: 0,
            expires: Expires::Absent,
            meta: Value::Object(Map::new()),
        }
    }

    /// Decode a body. Errors are [`crate::ErrorKind::Malformed`] and name the key and the problem.
    pub fn decode(body: &[u8]) -> Result<Message> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Error::malformed(format!("body is not valid JSON: {e}")))?;
        Message::from_value(value)
    }

    /// Decode an already parsed body (see [`Message::decode`]).
    pub fn from_value(value: Value) -> Result<Message> {
        let Value::Object(mut obj) = value else {
            return Err(Error::malformed(format!(
                "body is {}, expected a JSON object",
                type_name(&value)
            )));
        };
        let mut required = |key: &str| {
            obj.remove(key)
                .ok_or_else(|| Error::malformed(format!("required key `{key}` is missing")))
        };
        let signal_type = match required("signal_type")? {
            Value::String(s) => SignalType::parse(&s).ok_or_else(|| {
                Error::malformed(format!(
                    "key `signal_type`: unknown value {s:?}, expected SAVE, DELETE or SYNC"
                ))
            })?,
            other => return Err(wrong_type("signal_type", "a string", &other)),
        };
        let cqrs_id = match required("cqrs_id")? {
            Value::String(s) if !s.is_empty() => s,
            Value::String(_) => return Err(Error::malformed("key `cqrs_id` is an empty string")),
            other => return Err(wrong_type("cqrs_id", "a string", &other)),
        };
        let instance_data = match required("instance_data")? {
            Value::Object(m) => m,
            other => return Err(wrong_type("instance_data", "an object", &other)),
        };
        let instance_pk = match required("instance_pk")? {
            v @ (Value::Number(_) | Value::String(_)) => v,
            other => return Err(wrong_type("instance_pk", "a number or a string", &other)),
        };
        let previous_data = match obj.remove("previous_data") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => return Err(wrong_type("previous_data", "an object or null", &other)),
        };
        let correlation_id = match obj.remove("correlation_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => return Err(wrong_type("correlation_id", "a string or null", &other)),
        };
        let retries = match obj.remove("retries") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => {
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        Error::malformed(format!(
                            "key `retries`: {n} is not a non-negative integer"
                        ))
                    })?
            }
            Some(other) => return Err(wrong_type("retries", "an integer", &other)),
        };
        let expires = match obj.remove("expires") {
            None => Expires::Absent,
            Some(Value::Null) => Expires::Never,
            Some(Value::String(s)) => Expires::At(
                parse_datetime(&s).map_err(|e| Error::malformed(format!("key `expires`: {e}")))?,
            ),
            Some(other) => return Err(wrong_type("expires", "a string or null", &other)),
        };
        let meta = obj.remove("meta").unwrap_or(Value::Null);
        Ok(Message {
            signal_type,
            cqrs_id,
            instance_data,
            previous_data,
            instance_pk,
            correlation_id,
            retries,
            expires,
            meta,
        })
    }

    /// Encode as compact JSON with django-cqrs's nine keys in its order.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Wire<'a> {
            signal_type: SignalType,
            cqrs_id: &'a str,
            instance_data: &'a Map<String, Value>,
            previous_data: &'a Option<Map<String, Value>>,
            instance_pk: &'a Value,
            correlation_id: &'a Option<String>,
            retries: u32,
            expires: Option<String>,
            meta: &'a Value,
        }
        let wire = Wire {
            signal_type: self.signal_type,
            cqrs_id: &self.cqrs_id,
            instance_data: &self.instance_data,
            previous_data: &self.previous_data,
            instance_pk: &self.instance_pk,
            correlation_id: &self.correlation_id,
            retries: self.retries,
            expires: match self.expires {
                Expires::At(t) => Some(format_expires(t)),
                Expires::Absent | Expires::Never => None,
            },
            meta: &self.meta,
        };
        serde_json::to_vec(&wire).expect("a JSON value always serializes")
    }

    /// `instance_data.cqrs_revision`; missing or not an integer is an apply error, as in django-cqrs.
    pub fn revision(&self) -> Result<i32> {
        match self.instance_data.get("cqrs_revision") {
            None => Err(Error::apply("instance_data has no `cqrs_revision`")),
            Some(Value::Number(n)) => {
                n.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| {
                        Error::apply(format!(
                            "instance_data.cqrs_revision: {n} is not a 32-bit integer"
                        ))
                    })
            }
            Some(other) => Err(Error::apply(format!(
                "instance_data.cqrs_revision is {}, expected an integer",
                type_name(other)
            ))),
        }
    }

    /// `instance_data.cqrs_updated` as an instant; missing or unparsable is an apply error.
    pub fn updated(&self) -> Result<DateTime<Utc>> {
        match self.instance_data.get("cqrs_updated") {
            None => Err(Error::apply("instance_data has no `cqrs_updated`")),
            Some(Value::String(s)) => parse_datetime(s)
                .map_err(|e| Error::apply(format!("instance_data.cqrs_updated: {e}"))),
            Some(other) => Err(Error::apply(format!(
                "instance_data.cqrs_updated is {}, expected a datetime string",
                type_name(other)
            ))),
        }
    }

    /// True if `expires` is set and not after `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        matches!(self.expires, Expires::At(t) if t <= now)
    }
}

/// A stored body as the relay publishes it: the same message with `retries` 0 and `expires` set,
/// and its signal type (the relay's headers depend on it). The result is what
/// `Message::decode`, setting both keys and [`Message::encode`] give, read as JSON, but the keys
/// the relay does not change are copied as they are written (numbers keep their text) instead of
/// being parsed into values and written again, which was most of the time the relay spent framing
/// a message. A body this cannot copy safely (a `\u` escape, a key given twice) takes the full
/// decode, so the errors are [`Message::decode`]'s.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use cqrs::message::{restamp, SignalType};
/// let body = br#"{"signal_type":"SAVE","cqrs_id":"item","instance_data":{"id":1},"instance_pk":1,"retries":3}"#;
/// let at = Utc.with_ymd_and_hms(2026, 12, 8, 1, 2, 3).unwrap();
/// let (signal, out) = restamp(body, at).unwrap();
/// assert_eq!(signal, SignalType::Save);
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     r#"{"signal_type":"SAVE","cqrs_id":"item","instance_data":{"id":1},"previous_data":null,"instance_pk":1,"correlation_id":null,"retries":0,"expires":"2026-12-08T01:02:03+00:00","meta":null}"#
/// );
/// ```
pub fn restamp(body: &[u8], expires: DateTime<Utc>) -> Result<(SignalType, Vec<u8>)> {
    if let Some(copied) = restamp_copying(body, expires) {
        return Ok(copied);
    }
    let mut m = Message::decode(body)?;
    m.expires = Expires::At(expires);
    m.retries = 0;
    Ok((m.signal_type, m.encode()))
}

/// The body's keys borrowed as written: only what [`Message::from_value`] checks is looked at.
#[derive(Deserialize)]
struct Stored<'a> {
    signal_type: &'a str,
    #[serde(borrow)]
    cqrs_id: &'a RawValue,
    #[serde(borrow)]
    instance_data: &'a RawValue,
    #[serde(borrow, default)]
    previous_data: Option<&'a RawValue>,
    #[serde(borrow)]
    instance_pk: &'a RawValue,
    #[serde(borrow, default)]
    correlation_id: Option<&'a RawValue>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(borrow, default)]
    expires: Option<&'a RawValue>,
    #[serde(borrow, default)]
    meta: Option<&'a RawValue>,
}

/// A key's value as written, `null` when absent.
fn raw_or_null(raw: Option<&RawValue>) -> &[u8] {
    raw.map_or("null", RawValue::get).as_bytes()
}

/// [`restamp`] by copying, or `None` where the full decode must decide (including every body it
/// rejects).
fn restamp_copying(body: &[u8], expires: DateTime<Utc>) -> Option<(SignalType, Vec<u8>)> {
    // Skipping a string checks its escapes' hex digits but not that surrogates pair up, which
    // the full decode rejects; bodies with `\u` escapes are rare (capture writes UTF-8).
    if body.windows(2).any(|w| w == b"\\u") {
        return None;
    }
    // A struct also reads from a JSON array; the full decode takes only an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    // `null` reads as `None` for the optional keys, as it does in the full decode.
    let s: Stored = serde_json::from_slice(body).ok()?;
    let signal_type = SignalType::parse(s.signal_type)?;
    let starts =
        |raw: &RawValue, first: fn(u8) -> bool| raw.get().bytes().next().is_some_and(first);
    let object = |raw: &RawValue| starts(raw, |b| b == b'{');
    let string = |raw: &RawValue| starts(raw, |b| b == b'"');
    let number_or_string =
        |raw: &RawValue| starts(raw, |b| b == b'"' || b == b'-' || b.is_ascii_digit());
    if !string(s.cqrs_id)
        || s.cqrs_id.get() == "\"\""
        || !object(s.instance_data)
        || !s.previous_data.is_none_or(object)
        || !number_or_string(s.instance_pk)
        || !s.correlation_id.is_none_or(string)
    {
        return None;
    }
    // Read only to be checked (the full decode rejects what does not fit a `u32`): it becomes 0.
    let _ = s.retries;
    if let Some(raw) = s.expires {
        let text: &str = serde_json::from_str(raw.get()).ok()?;
        parse_datetime(text).ok()?;
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut put = |key: &str, value: &[u8]| {
        out.push(if out.is_empty() { b'{' } else { b',' });
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value);
    };
    put(
        "signal_type",
        format!("\"{}\"", signal_type.as_str()).as_bytes(),
    );
    put("cqrs_id", s.cqrs_id.get().as_bytes());
    put("instance_data", s.instance_data.get().as_bytes());
    put("previous_data", raw_or_null(s.previous_data));
    put("instance_pk", s.instance_pk.get().as_bytes());
    put("correlation_id", raw_or_null(s.correlation_id));
    put("retries", b"0");
    put(
        "expires",
        format!("\"{}\"", format_expires(expires)).as_bytes(),
    );
    put("meta", raw_or_null(s.meta));
    out.push(b'}');
    Some((signal_type, out))
}

fn wrong_type(key: &str, expected: &str, found: &Value) -> Error {
    Error::malformed(format!(
        "key `{key}` is {}, expected {expected}",
        type_name(found)
    ))
}

/// Format an instant the way Python's `str(datetime)` does: `2021-04-30 11:50:05.164341+00:00`,
/// without the fraction when microseconds are 0.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let t = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap();
/// assert_eq!(cqrs::message::format_datetime(&t), "2024-02-29 23:59:58+00:00");
/// ```
pub fn format_datetime<Tz: TimeZone>(t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let fixed: DateTime<FixedOffset> = t.fixed_offset();
    python_str(&fixed.naive_local(), Some(fixed.offset().local_minus_utc())).unwrap_or_else(|| {
        if fixed.timestamp_subsec_micros() == 0 {
            fixed.format("%Y-%m-%d %H:%M:%S%:z").to_string()
        } else {
            fixed.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string()
        }
    })
}

/// Format a naive datetime as Python's `str()` does (no offset).
pub fn format_naive_datetime(t: &NaiveDateTime) -> String {
    python_str(t, None).unwrap_or_else(|| {
        if t.and_utc().timestamp_subsec_micros() == 0 {
            t.format("%Y-%m-%d %H:%M:%S").to_string()
        } else {
            t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
        }
    })
}

/// Python's `str()` of a datetime written field by field: a dump formats one per row and
/// chrono's `format` parses its pattern every time (13% of a dump's CPU). `None` for what the
/// callers leave to chrono: years outside 0–9999, leap seconds, offsets with seconds.
fn python_str(t: &NaiveDateTime, offset_secs: Option<i32>) -> Option<String> {
    use std::fmt::Write;
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&t.year())
        || nanos >= 1_000_000_000
        || offset_secs.is_some_and(|o| o % 60 != 0)
    {
        return None;
    }
    let mut s = String::with_capacity(32);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if nanos >= 1_000 {
        let _ = write!(s, ".{:06}", nanos / 1_000);
    }
    if let Some(off) = offset_secs {
        let sign = if off < 0 { '-' } else { '+' };
        let off = off.unsigned_abs();
        let _ = write!(s, "{sign}{:02}:{:02}", off / 3600, off % 3600 / 60);
    }
    Some(s)
}

/// Format `expires`: whole seconds, `T`, `+00:00` (`2021-05-01T11:50:05+00:00`).
pub fn format_expires(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Parse a datetime in any form a Django master sends: space or `T` between date and time,
/// optional fraction, offset `+HH:MM`, `Z` or none (naive values are taken as UTC, as a UTC
/// Django replica stores them).
pub fn parse_datetime(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    let normalized = t.replacen(' ', "T", 1);
    let normalized = match normalized.strip_suffix('Z') {
        Some(rest) => format!("{rest}+00:00"),
        None => normalized,
    };
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(&normalized, fmt) {
            return Ok(dt.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(&normalized, fmt) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "{s:?} is not a datetime (expected e.g. \"2021-04-30 11:50:05.164341+00:00\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay's bodies take the copying path (the full decode is only the fallback): what
    /// capture writes, and django-cqrs's own bodies where they hold no `\u` escape.
    #[test]
    fn restamp_copies_what_capture_writes() {
        let mut data = Map::new();
        data.insert("id".into(), Value::from(1));
        data.insert("name".into(), Value::from("a/b \"q\" ü 😀"));
        let m = Message::new(SignalType::Delete, "item", Value::from(1), data);
        let at = Utc.with_ymd_and_hms(2026, 12, 8, 0, 0, 0).unwrap();
        let (signal, out) = restamp_copying(&m.encode(), at).expect("copied");
        assert_eq!(signal, SignalType::Delete);
        let mut stamped = m.clone();
        stamped.expires = Expires::At(at);
        assert_eq!(out, stamped.encode());
        let django = br#"{"signal_type": "SYNC", "cqrs_id": "item", "instance_data": {"id": 2}, "previous_data": null, "instance_pk": 2, "correlation_id": null, "retries": 5, "expires": "2026-11-24T14:17:42+00:00", "meta": {"a": 1}}"#;
        assert!(restamp_copying(django, at).is_some());
        assert!(restamp_copying(br#"{"signal_type":"SAVE","cqrs_id":"\u0069tem","instance_data":{},"instance_pk":1}"#, at).is_none());
    }

    /// The field-by-field formatter writes what chrono's patterns write.
    #[test]
    fn python_str_matches_chrono_formatting() {
        let base = NaiveDate::from_ymd_opt(1, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let nanos = match i % 4 {
                0 => 0,
                1 => (seed % 1_000) as i64,
                _ => (seed % 1_000_000_000) as i64,
            };
            let t = base
                + chrono::Duration::seconds((seed >> 20) as i64 % 315_537_897_599)
                + chrono::Duration::nanoseconds(nanos);
            let off = FixedOffset::east_opt((seed % 100_000) as i32 - 50_000).unwrap();
            let aware = off.from_utc_datetime(&t);
            let chrono_aware = if aware.timestamp_subsec_micros() == 0 {
                aware.format("%Y-%m-%d %H:%M:%S%:z").to_string()
            } else {
                aware.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string()
            };
            assert_eq!(format_datetime(&aware), chrono_aware, "{t:?} {off}");
            let chrono_naive = if t.and_utc().timestamp_subsec_micros() == 0 {
                t.format("%Y-%m-%d %H:%M:%S").to_string()
            } else {
                t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
            };
            assert_eq!(format_naive_datetime(&t), chrono_naive, "{t:?}");
        }
    }

    #[test]
    fn python_str_forms_round_trip() {
        for s in [
            "2026-11-23 14:17:38.255580+00:00",
            "2024-02-29 23:59:58+00:00",
            "2024-07-01 12:00:00.500000+02:00",
        ] {
            let t = DateTime::parse_from_str(&s.replacen(' ', "T", 1), "%Y-%m-%dT%H:%M:%S%.f%:z")
                .unwrap();
            assert_eq!(format_datetime(&t), s);
            assert_eq!(parse_datetime(s).unwrap(), t.with_timezone(&Utc));
        }
    }

    #[test]
    fn accepts_t_z_and_naive_forms() {
        let want = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap();
        for s in [
            "2024-02-29T23:59:58Z",
            "2024-02-29 23:59:58",
            "2024-02-29T23:59:58+00:00",
        ] {
            assert_eq!(parse_datetime(s).unwrap(), want, "{s}");
        }
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn expires_is_whole_seconds_with_offset() {
        let t = Utc.with_ymd_and_hms(2021, 5, 1, 11, 50, 5).unwrap()
            + chrono::Duration::microseconds(123);
        assert_eq!(format_expires(t), "2021-05-01T11:50:05+00:00");
    }
}
