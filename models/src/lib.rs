//! The thirteen domain models of dataflow-rs: a product catalogue with its classification
//! codes, suppliers and safety rules, and the customers, projects, quotes and recommendations
//! built on it. Each `#[derive(Model)]` yields nine typed workflow nodes.

#![warn(missing_docs)]

mod catalogue;
mod classification;
mod compliance;
mod sales;

use dataflow_core::{Model, ModelMeta};

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
