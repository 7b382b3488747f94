use chrono::{DateTime, Utc};
use dataflow_core::{Model, Node};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A parent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "parents", soft_delete, multi_tenant, cache_ttl = 60)]
pub struct Parent {
    #[dataflow(primary_key)]
    pub id: i64,
    #[dataflow(unique, len(min = 1, max = 20), pattern = "^[a-z]+$")]
    pub code: String,
    #[dataflow(embed)]
    pub notes: Option<String>,
    #[dataflow(indexed, min = -1, max = 1.5)]
    pub score: f64,
    #[dataflow(one_of("a", "b"))]
    pub kind: String,
    pub small: i32,
    pub ratio: Option<f32>,
    pub seen_at: Option<DateTime<Utc>>,
    pub extra: serde_json::Value,
    #[dataflow(relation(target = Parent, name = "CHILD_OF", on_delete = "set_null"))]
    pub parent_id: Option<i64>,
}

fn main() {
    let meta = Parent::meta();
    assert_eq!(meta.table, "parents");
    assert_eq!(meta.relations[0].target, "Parent");
    assert_eq!(meta.relations[0].on_delete, dataflow_core::OnDelete::SetNull);
    assert_eq!(ParentCreateNode.descriptor().type_name, "ParentCreateNode");
    let _filter = Parent::SCORE.gte(0.5).and(Parent::CODE.starts_with("a"));
    let _entity_table = <parent_entity::Entity as dataflow_core::sea_orm::EntityName>::table_name(&parent_entity::Entity);
    let _new: NewParent = serde_json::from_value(serde_json::json!({
        "code": "x", "score": 1.0, "kind": "a", "small": 1, "extra": {}
    })).expect("optional fields may be omitted");
}
