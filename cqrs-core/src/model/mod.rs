//! What a model is to the pipeline: the table description ([`TableSpec`], in [`spec`]), the
//! replica side ([`Replica`], [`ReplicaModel`], in [`replica`]) and the master side
//! ([`MasterSpec`], [`MasterModel`], in [`master`]). The derives implement [`ReplicaModel`] and
//! [`MasterModel`]; the [`Registry`](crate::Registry) of a binary's models lives above the apply
//! engine, in [`crate::registry`].

pub mod master;
pub mod replica;
pub mod spec;

pub use master::{
    CaptureMode, Correlation, CorrelationId, MasterHooks, MasterModel, MasterSpec, Serializer,
};
pub use replica::{
    AfterApply, ApplyStats, BatchReport, Change, Outcome, Replica, ReplicaHooks, ReplicaModel,
    Retry,
};
pub use spec::{ColumnSpec, TableSpec, TableSpecBuilder};

/// A row's `instance_data` as the hooks see it: wire names to wire values.
pub type InstanceData = serde_json::Map<String, serde_json::Value>;
