use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
struct Thing {
    id: i64,
    name: String,
}

fn main() {}
