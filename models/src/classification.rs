//! Classification codes (UNSPSC, ETIM) and the classifications that attach them to products.

use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A UNSPSC code: segment, family, class or commodity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "unspsc_codes", cache_ttl = 86400)]
pub struct UnspscCode {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// The eight-digit code, e.g. `27112700`.
    #[dataflow(unique, pattern = "^[0-9]{8}$")]
    pub code: String,
    /// Its English title.
    #[dataflow(embed, len(min = 1, max = 300))]
    pub title: String,
    /// Which level of the hierarchy the code is.
    #[dataflow(indexed, one_of("segment", "family", "class", "commodity"))]
    pub level: String,
}

/// An ETIM product class, e.g. `EC000062` (drill).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "etim_classes", cache_ttl = 86400)]
pub struct EtimClass {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// The class code.
    #[dataflow(unique, pattern = "^EC[0-9]{6}$")]
    pub code: String,
    /// Its English description.
    #[dataflow(embed, len(min = 1, max = 300))]
    pub description: String,
    /// The ETIM group the class belongs to, e.g. `EG000018`.
    #[dataflow(indexed, pattern = "^EG[0-9]{6}$")]
    pub group_code: String,
    /// The ETIM release the class comes from, e.g. `9.0`.
    #[dataflow(pattern = "^[0-9]+\\.[0-9]+$")]
    pub release: String,
}

/// The codes a product is classified under, with how sure we are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "classifications")]
pub struct Classification {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// The product classified.
    #[dataflow(relation(target = crate::Product, name = "CLASSIFIES", on_delete = "cascade"))]
    pub product_id: i64,
    /// Its UNSPSC code.
    #[dataflow(relation(target = UnspscCode, name = "AS_UNSPSC"))]
    pub unspsc_id: i64,
    /// Its ETIM class, when known.
    #[dataflow(relation(target = EtimClass, name = "AS_ETIM"))]
    pub etim_id: Option<i64>,
    /// Confidence from 0 to 1.
    #[dataflow(min = 0, max = 1)]
    pub confidence: f64,
    /// How the classification was made.
    #[dataflow(indexed, one_of("manual", "vote", "import"))]
    pub method: String,
    /// Why these codes, e.g. which similar products voted for them.
    #[dataflow(embed, len(max = 4000))]
    pub rationale: Option<String>,
}
