use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    #[dataflow(len(max = 3))]
    price: f64,
}

fn main() {}
