use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(soft_delete, soft_delete)]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    #[dataflow(indexed, indexed)]
    name: String,
}

fn main() {}
