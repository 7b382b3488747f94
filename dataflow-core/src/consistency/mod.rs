//! Keeping the projections (cache, vectors, graph) in step with the relational store: the
//! transactional [`outbox`], the [`projection`] of a row into each store, the background
//! `projector`, and the [`embedding`] each vector collection was made with. Everything here works through [`crate::store::StoreHandles`]; nothing below
//! this layer knows about it.

pub mod embedding;
pub mod outbox;
pub mod projection;
pub(crate) mod projector;

pub use embedding::{ReembedProgress, ReembedReport, VectorRecord};
pub use outbox::{Backlog, Outbox, OutboxRecord, SyncReport};
pub use projection::ProjectionSet;
