use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    // SET NULL needs a column that can hold NULL.
    #[dataflow(relation(target = Thing, name = "CHILD_OF", on_delete = "set_null"))]
    parent_id: i64,
    #[dataflow(relation(target = Thing, name = "COPY_OF", on_delete = "remove"))]
    original_id: Option<i64>,
}

fn main() {}
