//! The description of a replicated table ([`TableSpec`], [`ColumnSpec`]) and its checked builder:
//! what `#[derive(Master)]` and `#[derive(Replica)]` generate and what every SQL statement of the
//! pipeline is built from.

use crate::error::{Error, Result};
use crate::value::ColumnType;

/// One column of a replicated table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Column name in the replica table.
    pub name: String,
    /// Key in `instance_data` (CQRS_MAPPING); the column name unless renamed.
    pub wire: String,
    /// SQL type.
    pub ty: ColumnType,
    /// The column accepts NULL.
    pub nullable: bool,
    /// The key may be absent from `instance_data`: the database default applies on insert and the
    /// stored value is kept on update.
    pub optional: bool,
}

impl ColumnSpec {
    /// A required, NOT NULL column whose wire name is its name.
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Self {
        let name = name.into();
        ColumnSpec {
            wire: name.clone(),
            name,
            ty,
            nullable: false,
            optional: false,
        }
    }

    /// Read this column from a differently named `instance_data` key.
    pub fn wire(mut self, wire: impl Into<String>) -> Self {
        self.wire = wire.into();
        self
    }

    /// The column accepts NULL (an `Option` field).
    pub fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }

    /// The key may be absent from `instance_data`.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// A replicated table: what the apply engine needs to write rows of one model.
///
/// ```
/// use cqrs::{ColumnSpec, TableSpec, value::ColumnType};
/// let spec = TableSpec::new("item", "replica_items")
///     .key("id", ColumnType::BigInt)
///     .column(ColumnSpec::new("title", ColumnType::Text).wire("name"))
///     .build()
///     .unwrap();
/// assert_eq!(spec.columns().len(), 4); // id, title, cqrs_revision, cqrs_updated
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    cqrs_id: String,
    table: String,
    columns: Vec<ColumnSpec>,
    key: usize,
    revision: usize,
    updated: usize,
    depends_on: Vec<String>,
}

/// Builder for [`TableSpec`].
#[derive(Debug, Clone)]
pub struct TableSpecBuilder {
    cqrs_id: String,
    table: String,
    key: Option<ColumnSpec>,
    columns: Vec<ColumnSpec>,
    depends_on: Vec<String>,
}

impl TableSpec {
    /// Start describing the table `table` that replicates `cqrs_id`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(cqrs_id: impl Into<String>, table: impl Into<String>) -> TableSpecBuilder {
        TableSpecBuilder {
            cqrs_id: cqrs_id.into(),
            table: table.into(),
            key: None,
            columns: Vec::new(),
            depends_on: Vec::new(),
        }
    }

    /// The model identifier.
    pub fn cqrs_id(&self) -> &str {
        &self.cqrs_id
    }
    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }
    /// All columns, the key first.
    pub fn columns(&self) -> &[ColumnSpec] {
        &self.columns
    }
    /// Index of the primary key column.
    pub fn key_index(&self) -> usize {
        self.key
    }
    /// Index of `cqrs_revision`.
    pub fn revision_index(&self) -> usize {
        self.revision
    }
    /// Index of `cqrs_updated`.
    pub fn updated_index(&self) -> usize {
        self.updated
    }
    /// The primary key column.
    pub fn key_column(&self) -> &ColumnSpec {
        &self.columns[self.key]
    }
    /// Models this one references.
    pub fn depends_on(&self) -> &[String] {
        &self.depends_on
    }
}

/// True if `name` may be used as an SQL identifier without quoting surprises.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

impl TableSpecBuilder {
    /// The single-column primary key (integer, text or UUID).
    pub fn key(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.key = Some(ColumnSpec::new(name, ty));
        self
    }

    /// The primary key column with a different wire name (the DELETE body always says `id`).
    pub fn key_column(mut self, column: ColumnSpec) -> Self {
        self.key = Some(column);
        self
    }

    /// A replicated column.
    pub fn column(mut self, column: ColumnSpec) -> Self {
        self.columns.push(column);
        self
    }

    /// A model whose rows this one references; its batches apply first.
    pub fn depends_on(mut self, cqrs_id: impl Into<String>) -> Self {
        self.depends_on.push(cqrs_id.into());
        self
    }

    /// Check names and types and add `cqrs_revision` / `cqrs_updated` unless declared.
    pub fn build(self) -> Result<TableSpec> {
        let ctx = |m: String| {
            Error::config(format!(
                "replica `{}` (table {}): {m}",
                self.cqrs_id, self.table
            ))
        };
        let key = self
            .key
            .ok_or_else(|| ctx("no primary key column declared".into()))?;
        if !key.ty.can_be_key() {
            return Err(ctx(format!(
                "primary key type {} is not supported (integer, text or uuid)",
                key.ty.name()
            )));
        }
        let mut columns = vec![key];
        columns.extend(self.columns);
        if !columns.iter().any(|c| c.name == "cqrs_revision") {
            columns.push(ColumnSpec::new("cqrs_revision", ColumnType::Integer));
        }
        if !columns.iter().any(|c| c.name == "cqrs_updated") {
            columns.push(ColumnSpec::new("cqrs_updated", ColumnType::Timestamptz));
        }
        if columns.len() > 64 {
            return Err(ctx(format!(
                "{} columns, at most 64 are supported",
                columns.len()
            )));
        }
        for name in std::iter::once(&self.table).chain(columns.iter().map(|c| &c.name)) {
            if !is_identifier(name) {
                return Err(ctx(format!("{name:?} is not a plain SQL identifier")));
            }
        }
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(ctx(format!("column `{}` is declared twice", c.name)));
            }
            if columns[..i].iter().any(|o| o.wire == c.wire) {
                return Err(ctx(format!(
                    "wire name `{}` is used by two columns",
                    c.wire
                )));
            }
        }
        let find = |n: &str| {
            columns
                .iter()
                .position(|c| c.name == n)
                .expect("added above")
        };
        let (revision, updated) = (find("cqrs_revision"), find("cqrs_updated"));
        if columns[revision].ty != ColumnType::Integer {
            return Err(ctx("cqrs_revision must be an integer column".into()));
        }
        if columns[updated].ty != ColumnType::Timestamptz {
            return Err(ctx("cqrs_updated must be a timestamptz column".into()));
        }
        Ok(TableSpec {
            cqrs_id: self.cqrs_id,
            table: self.table,
            columns,
            key: 0,
            revision,
            updated,
            depends_on: self.depends_on,
        })
    }
}
