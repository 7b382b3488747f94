//! Customer-owned data, one tenant per customer organisation: customers, their projects,
//! quotes and the product recommendations made for projects.

use chrono::{DateTime, Utc};
use dataflow_core::Model;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A customer account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "customers", multi_tenant, soft_delete)]
pub struct Customer {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// Company or person name.
    #[dataflow(embed, len(min = 1, max = 200))]
    pub name: String,
    /// Contact e-mail, unique within the tenant.
    #[dataflow(unique, len(max = 254), pattern = "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$")]
    pub email: String,
    /// Market segment.
    #[dataflow(indexed, one_of("industrial", "construction", "retail", "public"))]
    pub segment: String,
    /// ISO 3166-1 alpha-2 country code.
    #[dataflow(pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// Credit we extend.
    #[dataflow(min = 0)]
    pub credit_limit: f64,
}

/// A customer's project, for which we quote and recommend products.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "projects", multi_tenant)]
pub struct Project {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// The customer.
    #[dataflow(relation(target = Customer, name = "FOR_CUSTOMER"))]
    pub customer_id: i64,
    /// Project name.
    #[dataflow(embed, len(min = 1, max = 200))]
    pub name: String,
    /// What the project needs.
    #[dataflow(embed, len(max = 10000))]
    pub description: String,
    /// Where the project stands.
    #[dataflow(indexed, one_of("draft", "active", "won", "lost", "closed"))]
    pub status: String,
    /// Budget, when known.
    #[dataflow(min = 0)]
    pub budget: Option<f64>,
    /// Main category of products it needs.
    #[dataflow(relation(target = crate::Category, name = "NEEDS_CATEGORY", on_delete = "set_null"))]
    pub category_id: Option<i64>,
    /// When it must be delivered.
    pub due_at: Option<DateTime<Utc>>,
}

/// An offer to a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "quotes", multi_tenant, soft_delete)]
pub struct Quote {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// Quote number, e.g. `Q-2026-00017`, unique within the tenant.
    #[dataflow(unique, pattern = "^Q-[0-9]{4}-[0-9]{5}$")]
    pub number: String,
    /// The customer.
    #[dataflow(relation(target = Customer, name = "QUOTED_TO"))]
    pub customer_id: i64,
    /// The project, if the quote is for one.
    #[dataflow(relation(target = Project, name = "FOR_PROJECT", on_delete = "set_null"))]
    pub project_id: Option<i64>,
    /// Total net amount.
    #[dataflow(indexed, min = 0)]
    pub total: f64,
    /// ISO 4217 currency.
    #[dataflow(one_of("EUR", "USD", "GBP", "CHF"))]
    pub currency: String,
    /// Where the quote stands.
    #[dataflow(indexed, one_of("draft", "sent", "accepted", "rejected", "expired"))]
    pub status: String,
    /// Last day the offer holds.
    pub valid_until: DateTime<Utc>,
    /// Notes to the customer.
    #[dataflow(embed, len(max = 4000))]
    pub notes: Option<String>,
}

/// A product proposed for a project, with a score and the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Model)]
#[dataflow(table = "recommendations", multi_tenant)]
pub struct Recommendation {
    /// Generated primary key.
    #[dataflow(primary_key)]
    pub id: i64,
    /// The project.
    #[dataflow(relation(target = Project, name = "RECOMMENDED_FOR", on_delete = "cascade"))]
    pub project_id: i64,
    /// The product proposed.
    #[dataflow(relation(target = crate::Product, name = "RECOMMENDS", on_delete = "cascade"))]
    pub product_id: i64,
    /// Ranking score from 0 to 1 (similarity and compliance).
    #[dataflow(indexed, min = 0, max = 1)]
    pub score: f64,
    /// Why it was proposed.
    #[dataflow(embed, len(min = 1, max = 4000))]
    pub rationale: String,
    /// What the customer did with it.
    #[dataflow(indexed, one_of("proposed", "accepted", "dismissed"))]
    pub status: String,
}
