use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(sharded)]
struct Thing {
    id: i64,
    #[dataflow(min = 0)]
    name: String,
    #[dataflow(embed)]
    price: f64,
    deleted_at: String,
}

fn main() {}
