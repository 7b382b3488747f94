use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    #[dataflow(relation(target = Thing))]
    parent_id: i64,
}

fn main() {}
