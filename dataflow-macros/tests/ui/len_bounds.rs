use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    #[dataflow(len(min = 5, max = 2))]
    code: String,
    #[dataflow(len(size = 2))]
    other: String,
}

fn main() {}
