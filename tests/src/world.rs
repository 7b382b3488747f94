//! A small linked catalogue for tests that need every model at once: two rows of each of the
//! 13 models, created through their Create nodes, every relation pointing at a real row.
//! Customer-owned rows belong to [`TENANT`].

use std::collections::BTreeMap;

use dataflow_core::nodes::create::{CreateInput, CreateOutput};
use dataflow_core::{Context, Model, Node};
use dataflow_models::*;
use serde_json::{Value as Json, json};

use crate::fixture::Fixture;

/// The tenant that owns the world's customers, projects, quotes and recommendations.
pub const TENANT: &str = "acme";

/// Two words per row index that no other row's text contains, so a search for them finds
/// exactly that row.
pub const MARKERS: [&str; 2] = ["amber falcon", "cobalt walrus"];

/// The rows of the world, by model name: two primary keys each, in creation order.
pub struct World {
    ids: BTreeMap<&'static str, [i64; 2]>,
}

async fn create<M: Model, N: Node<Input = CreateInput<M>, Output = CreateOutput<M>>>(ctx: &Context, node: N, row: Json) -> i64 {
    let record: M::New = serde_json::from_value(row.clone()).unwrap_or_else(|e| panic!("{} sample {row}: {e}", M::meta().name));
    let out = node
        .run(ctx, CreateInput { record })
        .await
        .unwrap_or_else(|e| panic!("creating a {}: {e}", M::meta().name));
    assert!(out.pending.is_empty(), "{} left {:?} pending", M::meta().name, out.pending);
    out.record.id()
}

impl World {
    /// Creates the world in the fixture's stores.
    pub async fn create(fx: &Fixture) -> World {
        let global = &fx.ctx;
        let tenant = fx.tenant(TENANT);
        let mut ids: BTreeMap<&'static str, [i64; 2]> = BTreeMap::new();
        let mut put = |model: &'static str, i: usize, id: i64| ids.entry(model).or_insert([0, 0])[i] = id;

        let root = create(
            global,
            CategoryCreateNode,
            json!({"slug": "tools", "name": "Tools", "description": "Every kind of tool", "parent_id": null, "active": true}),
        )
        .await;
        let drills = create(
            global,
            CategoryCreateNode,
            json!({"slug": "drills", "name": "Drills", "description": "Drills and drivers", "parent_id": root, "active": true}),
        )
        .await;
        put("Category", 0, root);
        put("Category", 1, drills);
        for (i, m) in MARKERS.iter().enumerate() {
            let maker = create(
                global,
                ManufacturerCreateNode,
                json!({"name": format!("Maker {i}"), "country": "DE", "website": null, "description": format!("Makes {m} drills")}),
            )
            .await;
            let supplier = create(global, SupplierCreateNode, json!({"code": format!("SUP-{i:05}"), "name": format!("Supplier {m}"), "email": "orders@supplier.example", "country": "NL", "rating": 4.0, "lead_time_days": 5, "active": true})).await;
            let unspsc = create(
                global,
                UnspscCodeCreateNode,
                json!({"code": format!("{:08}", 27112700 + i), "title": format!("Power drills {m}"), "level": "commodity"}),
            )
            .await;
            let etim = create(global, EtimClassCreateNode, json!({"code": format!("EC{:06}", 62 + i), "description": format!("Drill {m}"), "group_code": "EG000018", "release": "9.0"})).await;
            let standard = create(global, SafetyStandardCreateNode, json!({"code": format!("IEC 62841-2-{i}"), "title": format!("Hand-held tools {m}"), "body": "IEC", "scope": "Safety of hand-held drills", "published_at": null})).await;
            let product = create(global, ProductCreateNode, json!({"sku": format!("DRL-{i:04}"), "name": format!("Drill {m}"), "description": format!("Cordless drill {m} with two batteries"),
                "price": 100.0 + i as f64, "currency": "EUR", "stock": 10, "weight_kg": null, "active": true, "category_id": drills,
                "manufacturer_id": maker, "supplier_id": supplier, "attributes": {}})).await;
            let classification = create(global, ClassificationCreateNode, json!({"product_id": product, "unspsc_id": unspsc, "etim_id": etim, "confidence": 0.9, "method": "manual", "rationale": format!("Classified {m} by hand")})).await;
            let rule = create(global, ComplianceRuleCreateNode, json!({"name": format!("Rule {i}"), "description": format!("Drills {m} need insulation"), "standard_id": standard, "category_id": drills,
                "severity": "blocking", "requirement": {}, "active": true})).await;
            let customer = create(&tenant, CustomerCreateNode, json!({"name": format!("Buyer {m}"), "email": format!("buyer{i}@acme.example"), "segment": "industrial", "country": "DE", "credit_limit": 1000.0})).await;
            let project = create(&tenant, ProjectCreateNode, json!({"customer_id": customer, "name": format!("Fit-out {m}"), "description": "A new warehouse", "status": "active", "budget": null, "category_id": drills, "due_at": null})).await;
            let quote = create(&tenant, QuoteCreateNode, json!({"number": format!("Q-2026-{i:05}"), "customer_id": customer, "project_id": project, "total": 500.0, "currency": "EUR",
                "status": "draft", "valid_until": "2026-12-31T00:00:00Z", "notes": format!("Quote {m}")})).await;
            let recommendation = create(
                &tenant,
                RecommendationCreateNode,
                json!({"project_id": project, "product_id": product, "score": 0.8, "rationale": format!("Fits {m}"), "status": "proposed"}),
            )
            .await;
            for (model, id) in [
                ("Manufacturer", maker),
                ("Supplier", supplier),
                ("UnspscCode", unspsc),
                ("EtimClass", etim),
                ("SafetyStandard", standard),
                ("Product", product),
                ("Classification", classification),
                ("ComplianceRule", rule),
                ("Customer", customer),
                ("Project", project),
                ("Quote", quote),
                ("Recommendation", recommendation),
            ] {
                put(model, i, id);
            }
        }
        World { ids }
    }

    /// The `i`-th (0 or 1) row of `model`.
    pub fn id(&self, model: &str, i: usize) -> i64 {
        self.ids.get(model).unwrap_or_else(|| panic!("no {model} in the world"))[i]
    }
}
