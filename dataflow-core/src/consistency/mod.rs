//! Keeping the projections (cache, vectors, graph) in step with the relational store: the
//! transactional [`outbox`], the [`projection`] of a row into each store, and the background
//! `projector`. Everything here works through [`crate::store::StoreHandles`]; nothing below
//! this layer knows about it.

pub mod outbox;
pub mod projection;
pub(crate) mod projector;

pub use outbox::{Backlog, Outbox, OutboxRecord, SyncReport};
pub use projection::ProjectionSet;
