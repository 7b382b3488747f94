//! Safety standards and the compliance rules that require them for a category.

use chrono::{DateTime, Utc};
use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A published safety standard, e.g. `IEC 62841-2-1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "safety_standards", cache_ttl = 86400)]
pub struct SafetyStandard {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// The standard's designation.
    #[dataflow(unique, len(min = 2, max = 64))]
    pub code: String,
    /// Its title.
    #[dataflow(embed, len(min = 1, max = 500))]
    pub title: String,
    /// The body that publishes it.
    #[dataflow(indexed, one_of("IEC", "EN", "ISO", "UL", "ANSI", "DIN"))]
    pub body: String,
    /// What it covers.
    #[dataflow(embed, len(max = 4000))]
    pub scope: String,
    /// When the edition in force was published.
    pub published_at: Option<DateTime<Utc>>,
}

/// A rule: products of a category must meet a standard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "compliance_rules")]
pub struct ComplianceRule {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// Short name of the rule.
    #[dataflow(len(min = 1, max = 200))]
    pub name: String,
    /// What the rule asks and why.
    #[dataflow(embed, len(max = 4000))]
    pub description: String,
    /// The standard required.
    #[dataflow(relation(target = SafetyStandard, name = "REQUIRES_STANDARD"))]
    pub standard_id: i64,
    /// The category it applies to.
    #[dataflow(relation(target = crate::Category, name = "APPLIES_TO"))]
    pub category_id: i64,
    /// What failing it means.
    #[dataflow(indexed, one_of("info", "warning", "blocking"))]
    pub severity: String,
    /// The machine-checkable requirement, e.g. `{"attribute": "voltage", "max": 230}`.
    pub requirement: serde_json::Value,
    /// Whether the rule is in force.
    #[dataflow(indexed)]
    pub active: bool,
}
