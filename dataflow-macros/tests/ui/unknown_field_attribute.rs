use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "things")]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    #[dataflow(searchable)]
    name: String,
}

fn main() {}
