use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "things", sharded)]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
}

fn main() {}
