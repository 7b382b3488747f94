use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "Things; DROP")]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    #[allow(non_snake_case)]
    Name: String,
}

fn main() {}
