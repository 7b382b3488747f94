use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

struct NotAModel;

#[derive(Clone, Serialize, Deserialize, JsonSchema, Model)]
struct Thing {
    #[dataflow(primary_key)]
    id: i64,
    #[dataflow(relation(target = NotAModel, name = "POINTS_AT"))]
    other_id: i64,
}

fn main() {}
