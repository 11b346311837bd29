//! Derive macros for `cqrs`: `#[derive(Master)]` and `#[derive(Replica)]` on Diesel models.
//!
//! Empty until Foundation II (issue 4); until then a replica is a hand-built
//! `cqrs::TableSpec` driven by `cqrs::TableReplica`, or a hand-written `cqrs::Replica`.
