//! Every generated node describes itself and publishes JSON schemas of its input and output.

use dataflow_core::{Node, NodeKind, StoreKind};
use dataflow_models::*;

fn properties(schema: &schemars::Schema) -> Vec<String> {
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn nodes_describe_themselves_with_named_types_and_schemas() {
    let create = ProductCreateNode;
    let d = create.descriptor();
    assert_eq!(
        (d.type_name, d.model.name, d.kind, d.store),
        ("ProductCreateNode", "Product", NodeKind::Create, StoreKind::Relational)
    );
    assert!(d.summary.contains("Product"));

    let input = create.input_schema();
    assert_eq!(properties(&input), ["record"]);
    let record = input
        .get("$defs")
        .and_then(|d| d.get("NewProduct"))
        .expect("NewProduct is a named definition");
    let fields: Vec<&String> = record["properties"].as_object().unwrap().keys().collect();
    assert!(
        fields.iter().any(|f| *f == "sku") && !fields.iter().any(|f| *f == "id"),
        "{fields:?}"
    );
    assert!(properties(&create.output_schema()).contains(&"record".to_owned()));

    let update = properties(&QuoteUpdateNode.input_schema());
    for field in ["id", "expected_version", "filter", "patch"] {
        assert!(update.contains(&field.to_owned()), "{update:?}");
    }
    assert!(properties(&CustomerBulkUpsertNode.output_schema()).contains(&"errors".to_owned()));
    assert!(properties(&RecommendationAggregateNode.input_schema()).contains(&"group_by".to_owned()));
    assert_eq!(ClassificationListNode.descriptor().kind, NodeKind::List);
}

#[test]
fn all_thirteen_models_are_listed_with_their_relations() {
    let models = all_models();
    assert_eq!(models.len(), 13);
    let product = models.iter().find(|m| m.name == "Product").unwrap();
    let relations: Vec<(&str, &str)> = product.relations.iter().map(|r| (r.name, r.target)).collect();
    assert_eq!(
        relations,
        [
            ("IN_CATEGORY", "Category"),
            ("MADE_BY", "Manufacturer"),
            ("SUPPLIED_BY", "Supplier")
        ]
    );
    assert!(
        models
            .iter()
            .filter(|m| m.multi_tenant)
            .map(|m| m.name)
            .eq(["Customer", "Project", "Quote", "Recommendation"])
    );
    assert!(
        models.iter().all(|m| m.fields.iter().any(|f| f.embed)),
        "every model has text to embed"
    );
}
