//! The thirteen domain models of dataflow-rs: a product catalogue with its classification
//! codes, suppliers and safety rules, and the customers, projects, quotes and recommendations
//! built on it. Each `#[derive(Model)]` yields nine typed workflow nodes.

#![warn(missing_docs)]

mod catalogue;
mod classification;
mod compliance;
mod sales;

use dataflow_core::{Model, ModelMeta};
use dataflow_runtime::Registry;

pub use catalogue::*;
pub use classification::*;
pub use compliance::*;
pub use sales::*;

/// Metadata of every shipped model, in an order where relation targets come first.
pub fn all_models() -> Vec<&'static ModelMeta> {
    vec![
        Category::meta(),
        Manufacturer::meta(),
        Supplier::meta(),
        UnspscCode::meta(),
        EtimClass::meta(),
        SafetyStandard::meta(),
        Product::meta(),
        Classification::meta(),
        ComplianceRule::meta(),
        Customer::meta(),
        Project::meta(),
        Quote::meta(),
        Recommendation::meta(),
    ]
}

/// Registers the nine generated nodes of every shipped model (117 in all) in `registry`.
pub fn register_nodes(registry: &mut Registry) {
    registry
        .register_model::<Category>()
        .register_model::<Manufacturer>()
        .register_model::<Supplier>()
        .register_model::<UnspscCode>()
        .register_model::<EtimClass>()
        .register_model::<SafetyStandard>()
        .register_model::<Product>()
        .register_model::<Classification>()
        .register_model::<ComplianceRule>()
        .register_model::<Customer>()
        .register_model::<Project>()
        .register_model::<Quote>()
        .register_model::<Recommendation>();
}

/// A registry with the generic nodes and the 117 nodes of the shipped models.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    register_nodes(&mut registry);
    registry
}
