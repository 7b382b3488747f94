use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
struct Thing<T> {
    #[dataflow(primary_key)]
    id: i64,
    value: T,
}

fn main() {}
