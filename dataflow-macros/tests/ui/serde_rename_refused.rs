use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
#[serde(rename_all = "camelCase")]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    #[serde(rename = "title")]
    name: String,
}

fn main() {}
