//! The catalogue: products, their categories, manufacturers and suppliers.

use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A node of the category tree (power tools → drills → hammer drills).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "categories", cache_ttl = 3600)]
pub struct Category {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// URL-safe unique name, e.g. `hammer-drills`.
    #[dataflow(unique, len(min = 1, max = 80), pattern = "^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub slug: String,
    /// Display name.
    #[dataflow(embed, len(min = 1, max = 120))]
    pub name: String,
    /// What belongs in the category.
    #[dataflow(embed, len(max = 2000))]
    pub description: String,
    /// The parent category; `None` for a root.
    #[dataflow(relation(target = Category, name = "CHILD_OF"))]
    pub parent_id: Option<i64>,
    /// Whether products may be filed under it.
    #[dataflow(indexed)]
    pub active: bool,
}

/// A company that makes products.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "manufacturers", cache_ttl = 3600)]
pub struct Manufacturer {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// Registered name.
    #[dataflow(unique, embed, len(min = 1, max = 200))]
    pub name: String,
    /// ISO 3166-1 alpha-2 country code.
    #[dataflow(indexed, pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// Home page.
    #[dataflow(len(max = 500), pattern = "^https?://")]
    pub website: Option<String>,
    /// What the company makes.
    #[dataflow(embed, len(max = 4000))]
    pub description: String,
}

/// A company that sells products to us.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "suppliers", soft_delete)]
pub struct Supplier {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// Our supplier code, e.g. `SUP-00042`.
    #[dataflow(unique, pattern = "^SUP-[0-9]{5}$")]
    pub code: String,
    /// Trading name.
    #[dataflow(embed, len(min = 1, max = 200))]
    pub name: String,
    /// Order desk e-mail address.
    #[dataflow(len(max = 254), pattern = "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$")]
    pub email: String,
    /// ISO 3166-1 alpha-2 country code.
    #[dataflow(indexed, pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// Our rating of the supplier, 0 to 5.
    #[dataflow(min = 0, max = 5)]
    pub rating: f64,
    /// Usual days from order to delivery.
    #[dataflow(min = 0, max = 365)]
    pub lead_time_days: i32,
    /// Whether we still order from it.
    #[dataflow(indexed)]
    pub active: bool,
}

/// Something we sell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "products", soft_delete, cache_ttl = 600)]
pub struct Product {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// Stock-keeping unit, unique.
    #[dataflow(unique, len(min = 3, max = 64), pattern = "^[A-Z0-9][A-Z0-9-]*$")]
    pub sku: String,
    /// Display name.
    #[dataflow(embed, len(min = 1, max = 200))]
    pub name: String,
    /// Full description: what it is, what it is for.
    #[dataflow(embed, len(max = 10000))]
    pub description: String,
    /// Net unit price.
    #[dataflow(indexed, min = 0, max = 10000000)]
    pub price: f64,
    /// ISO 4217 currency of `price`.
    #[dataflow(one_of("EUR", "USD", "GBP", "CHF"))]
    pub currency: String,
    /// Units in stock.
    #[dataflow(min = 0)]
    pub stock: i64,
    /// Shipping weight in kilograms.
    #[dataflow(min = 0)]
    pub weight_kg: Option<f64>,
    /// Whether it can be sold.
    #[dataflow(indexed)]
    pub active: bool,
    /// Its category.
    #[dataflow(relation(target = Category, name = "IN_CATEGORY"))]
    pub category_id: i64,
    /// Who makes it.
    #[dataflow(relation(target = Manufacturer, name = "MADE_BY", on_delete = "set_null"))]
    pub manufacturer_id: Option<i64>,
    /// Who we buy it from.
    #[dataflow(relation(target = Supplier, name = "SUPPLIED_BY", on_delete = "set_null"))]
    pub supplier_id: Option<i64>,
    /// Technical attributes (voltage, torque, ...), free-form.
    pub attributes: serde_json::Value,
}
