//! The crate's one error type and the outcome classes that decide what happens to a message.

use std::fmt;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is; decides retry, dead letter or redo (ARCHITECTURE.md §5).
///
/// The dead-letter kinds render as the `cqrs-error-kind` header values via [`ErrorKind::as_str`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Not JSON, not an object, a required key missing or mistyped, unknown `signal_type`.
    Malformed,
    /// The body is over the size limit.
    TooLarge,
    /// No replica is registered for the message's `cqrs_id`.
    UnknownModel,
    /// The message's `expires` is in the past.
    Expired,
    /// The message is well formed but cannot be applied (missing field, constraint, bad value).
    Apply,
    /// Connection lost, serialization failure, deadlock, shutdown, busy database: redo, spend no retry.
    Transient,
    /// Bad configuration or command-line input.
    Config,
    /// A database error that is neither transient nor caused by one message.
    Database,
    /// A broker or transport failure that is not transient.
    Transport,
    /// Reading or writing a file.
    Io,
    /// The application's own error, returned from inside [`atomic`](crate::atomic) to roll the
    /// transaction back: [`Error::application`] wraps it, [`Error::application_error`] gives it back.
    Application,
}

impl ErrorKind {
    /// The header value of this kind (`malformed`, `too-large`, `unknown-model`, `expired`, `apply`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::UnknownModel => "unknown-model",
            ErrorKind::Expired => "expired",
            ErrorKind::Apply => "apply",
            ErrorKind::Transient => "transient",
            ErrorKind::Config => "config",
            ErrorKind::Database => "database",
            ErrorKind::Transport => "transport",
            ErrorKind::Io => "io",
            ErrorKind::Application => "application",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the cqrs library: a kind plus a message that names what was wrong and where.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Shorthand for [`ErrorKind::Malformed`].
    pub fn malformed(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Malformed, message)
    }

    /// Shorthand for [`ErrorKind::Apply`].
    pub fn apply(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Apply, message)
    }

    /// The application's own error, to return from inside [`atomic`](crate::atomic): the
    /// transaction rolls back, nothing is sent, and the caller gets it back with
    /// [`Error::application_error`] or [`Error::into_application_error`].
    ///
    /// ```
    /// #[derive(Debug, PartialEq)]
    /// struct OutOfStock(i64);
    /// impl std::fmt::Display for OutOfStock {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         write!(f, "product {} is out of stock", self.0)
    ///     }
    /// }
    /// impl std::error::Error for OutOfStock {}
    ///
    /// let err = cqrs::Error::application(OutOfStock(7));
    /// assert_eq!(err.kind(), cqrs::ErrorKind::Application);
    /// assert_eq!(err.to_string(), "product 7 is out of stock");
    /// assert_eq!(err.application_error::<OutOfStock>(), Some(&OutOfStock(7)));
    /// assert_eq!(err.into_application_error::<OutOfStock>().ok(), Some(OutOfStock(7)));
    /// ```
    pub fn application(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::new(ErrorKind::Application, error.to_string()).with_source(error)
    }

    /// The application's error of type `E` this wraps, if it is one ([`Error::application`]).
    pub fn application_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match (&self.kind, &self.source) {
            (ErrorKind::Application, Some(source)) => source.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// [`Error::application_error`], by value: `Err(self)` when it is not one of type `E`.
    pub fn into_application_error<E: std::error::Error + 'static>(self) -> Result<E, Self> {
        if self.application_error::<E>().is_none() {
            return Err(self);
        }
        let source = self.source.expect("checked");
        Ok(*source.downcast::<E>().expect("checked"))
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// The outcome class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True if redoing the same work later may succeed without any change to the input.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// True if the server cancelled a statement that ran past its timeout (`query_timeout_ms`).
    pub fn is_statement_timeout(&self) -> bool {
        self.message
            .to_ascii_lowercase()
            .contains(STATEMENT_TIMEOUT)
    }

    /// Prefix the message with context (e.g. the model or the line it concerns), keeping the kind.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Classify a Diesel error: transient (connection, serialization, deadlock, shutdown, busy) or
    /// caused by the data being written (constraint, bad value), which is [`ErrorKind::Apply`].
    pub fn from_diesel(err: diesel::result::Error, what: &str) -> Self {
        let kind = classify_diesel(&err);
        Error::new(kind, format!("{what}: {err}")).with_source(err)
    }
}

fn classify_diesel(err: &diesel::result::Error) -> ErrorKind {
    use diesel::result::{DatabaseErrorKind as K, Error as E};
    match err {
        E::DatabaseError(kind, info) => match kind {
            K::SerializationFailure | K::ClosedConnection | K::UnableToSendCommand => {
                ErrorKind::Transient
            }
            K::UniqueViolation
            | K::ForeignKeyViolation
            | K::NotNullViolation
            | K::CheckViolation
            | K::RestrictViolation
            | K::ExclusionViolation => ErrorKind::Apply,
            _ => classify_message(info.message()),
        },
        E::DeserializationError(_) | E::SerializationError(_) => ErrorKind::Apply,
        // A transaction manager left broken by a lost connection: a new connection heals it.
        E::BrokenTransactionManager => ErrorKind::Transient,
        E::AlreadyInTransaction => ErrorKind::Database,
        _ => ErrorKind::Database,
    }
}

/// PostgreSQL's words for a statement cancelled by `statement_timeout` (SQLSTATE 57014).
const STATEMENT_TIMEOUT: &str = "canceling statement due to statement timeout";

/// Diesel reports deadlocks, admin shutdowns, lost connections and SQLite's busy/locked states as
/// "unknown"; the message text is all it keeps, so match on the server's stable wording.
fn classify_message(message: &str) -> ErrorKind {
    const TRANSIENT: &[&str] = &[
        "deadlock detected",
        "terminating connection",
        "server closed the connection",
        "could not serialize access",
        "connection to server",
        "no connection to the server",
        "connection has been closed",
        "not currently accepting connections",
        "database is locked",
        "database table is locked",
        "database is busy",
        "the database system is shutting down",
        "the database system is starting up",
        "canceling statement due to conflict with recovery",
        "out of shared memory",
        "too many connections",
    ];
    const APPLY: &[&str] = &[
        "invalid input syntax",
        "out of range",
        "value too long",
        "violates",
        "constraint failed",
        "datatype mismatch",
        "numeric field overflow",
        "invalid input value",
        // Text or JSON the server's encoding cannot hold: a NUL byte, `\u0000` in jsonb, a
        // character with no equivalent in a non-UTF-8 database.
        "invalid byte sequence",
        "unsupported unicode escape sequence",
        "has no equivalent in encoding",
        // `query_timeout_ms` (PostgreSQL's statement_timeout): retried with a delay, then
        // dead-lettered, as django-cqrs counts CQRS_QUERY_TIMEOUT against the message.
        STATEMENT_TIMEOUT,
    ];
    let lower = message.to_ascii_lowercase();
    if TRANSIENT.iter().any(|t| lower.contains(t)) {
        ErrorKind::Transient
    } else if APPLY.iter().any(|t| lower.contains(t)) {
        ErrorKind::Apply
    } else {
        ErrorKind::Database
    }
}

impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        Error::from_diesel(err, "database")
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(err: diesel::ConnectionError) -> Self {
        // A refused or dropped connection heals by itself; a bad URL does not.
        let kind = match &err {
            diesel::ConnectionError::InvalidConnectionUrl(_) => ErrorKind::Config,
            _ => ErrorKind::Transient,
        };
        Error::new(kind, format!("cannot connect to the database: {err}")).with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlock_and_busy_are_transient_constraints_are_apply() {
        assert_eq!(classify_message("deadlock detected"), ErrorKind::Transient);
        assert_eq!(classify_message("database is locked"), ErrorKind::Transient);
        assert_eq!(
            classify_message("CHECK constraint failed: price >= 0"),
            ErrorKind::Apply
        );
        assert_eq!(
            classify_message("syntax error at or near"),
            ErrorKind::Database
        );
    }

    #[test]
    fn dead_letter_kinds_render_as_header_values() {
        assert_eq!(ErrorKind::UnknownModel.as_str(), "unknown-model");
        assert_eq!(ErrorKind::TooLarge.as_str(), "too-large");
    }
}
