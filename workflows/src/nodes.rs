//! The nodes the reference workflows add to the generated ones: reading a catalogue file,
//! voting on classification codes, evaluating compliance rules and ranking recommendations.
//! Each is a [`ComputeNode`]: typed input and output, no store of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dataflow_runtime::{ComputeNode, Registry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

use crate::records;

/// Most lines [`read_records`] reads from one file.
pub const MAX_RECORDS: usize = 1_000_000;

/// Registers the reference workflows' nodes.
pub fn register(registry: &mut Registry) {
    registry
        .register_dyn(Arc::new(ComputeNode::new(
            "ReadRecords",
            "Reads a catalogue file: JSONL lines `{\"model\": M, \"record\": {...}}` (or bare records of `model`), or CSV rows of `model` with a header of its field names; returns the records by model and every unreadable line.",
            read_records,
        )))
        .register_dyn(Arc::new(ComputeNode::new(
            "VoteClassification",
            "Votes on UNSPSC and ETIM codes from the classifications of the nearest products, each vote weighted by similarity (1 - cosine distance).",
            vote,
        )))
        .register_dyn(Arc::new(ComputeNode::new(
            "EvaluateRules",
            "Checks a product's attributes against compliance rules ({attribute, min|max|equals}); a pass/fail line per rule. Given the ancestors of the product's category, fails when the rules were collected from only part of the category tree.",
            evaluate_rules,
        )))
        .register_dyn(Arc::new(ComputeNode::new(
            "RankRecommendations",
            "Ranks candidate products for a project by similarity and compliance (blocking failures excluded) and returns Recommendation rows.",
            rank,
        )));
}

// ---------------------------------------------------------------------------------------------
// ReadRecords

fn default_model() -> String {
    "Product".into()
}

/// Input of `ReadRecords`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadRecordsInput {
    /// The file: `.jsonl` / `.ndjson` or `.csv`.
    pub path: String,
    /// The model of CSV rows and of JSONL lines without a `model` tag.
    #[serde(default = "default_model")]
    pub model: String,
}

/// A line that could not be read.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LineError {
    /// 1-based line (CSV: the record's line, header is line 1).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Output of `ReadRecords`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReadRecordsOutput {
    /// Records by model name; every shipped model is present (empty when the file has none).
    pub records: BTreeMap<String, Vec<Value>>,
    /// Lines that could not be read; the others are returned.
    pub errors: Vec<LineError>,
    /// Records read.
    pub count: usize,
}

/// Reads the catalogue file of `input` whole (see [`crate::import`] for files of any size).
pub fn read_records(input: ReadRecordsInput) -> Result<ReadRecordsOutput, String> {
    let default = records::model_meta(&input.model).map_err(|e| e.to_string())?;
    let mut out = ReadRecordsOutput {
        records: dataflow_models::all_models()
            .iter()
            .map(|m| (m.name.to_string(), Vec::new()))
            .collect(),
        errors: Vec::new(),
        count: 0,
    };
    for read in records::Records::open(Path::new(&input.path), default)? {
        let read = read?;
        match read.record {
            Ok((model, record)) => {
                if out.count >= MAX_RECORDS {
                    return Err(format!("more than {MAX_RECORDS} records"));
                }
                out.records.entry(model.name.to_string()).or_default().push(record);
                out.count += 1;
            }
            Err(e) => out.errors.push(LineError {
                line: read.line,
                message: e.to_string(),
            }),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// VoteClassification

/// A search hit, as the Search nodes return it (only the fields the vote reads).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Hit {
    /// The row found.
    pub record: Value,
    /// Cosine distance to the query (0 = same direction, 2 = opposite).
    pub distance: f64,
}

/// Input of `VoteClassification`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteInput {
    /// The nearest products (a ProductSearchNode's `hits`).
    pub hits: Vec<Hit>,
    /// Classification rows of those products.
    pub classifications: Vec<Value>,
}

/// Output of `VoteClassification`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct VoteOutput {
    /// The winning UNSPSC code's id.
    pub unspsc_id: i64,
    /// The winning ETIM class's id, when the voters had ETIM classes.
    pub etim_id: Option<i64>,
    /// Share of the voters' weight behind the winning UNSPSC code, 0 to 1.
    pub confidence: f64,
    /// How many classified neighbours voted.
    pub voters: usize,
    /// Which neighbours voted, and how.
    pub rationale: String,
}

fn winner(scores: &BTreeMap<i64, f64>) -> Option<(i64, f64)> {
    // Highest score; ties go to the lower id, so the vote is deterministic.
    scores.iter().fold(None, |best, (&id, &s)| match best {
        Some((_, b)) if b >= s => best,
        _ => Some((id, s)),
    })
}

/// Weighted vote of the hits' classifications.
pub fn vote(input: VoteInput) -> Result<VoteOutput, String> {
    let mut by_product: BTreeMap<i64, &Value> = BTreeMap::new();
    for c in &input.classifications {
        if let Some(product) = c.get("product_id").and_then(Value::as_i64) {
            by_product.entry(product).or_insert(c);
        }
    }
    let mut unspsc: BTreeMap<i64, f64> = BTreeMap::new();
    let mut etim: BTreeMap<i64, f64> = BTreeMap::new();
    let (mut total, mut voters, mut names) = (0.0, 0, Vec::new());
    for hit in &input.hits {
        let Some(id) = hit.record.get("id").and_then(Value::as_i64) else {
            continue;
        };
        let Some(classification) = by_product.get(&id) else { continue };
        let weight = (1.0 - hit.distance).max(0.0);
        let Some(code) = classification.get("unspsc_id").and_then(Value::as_i64) else {
            continue;
        };
        *unspsc.entry(code).or_default() += weight;
        if let Some(e) = classification.get("etim_id").and_then(Value::as_i64) {
            *etim.entry(e).or_default() += weight;
        }
        total += weight;
        voters += 1;
        names.push(format!(
            "{} ({:.2})",
            hit.record.get("sku").and_then(Value::as_str).unwrap_or("?"),
            weight
        ));
    }
    let Some((unspsc_id, score)) = winner(&unspsc) else {
        return Err(format!(
            "none of the {} nearest products is classified: nothing to vote on",
            input.hits.len()
        ));
    };
    let confidence = if total > 0.0 { (score / total).clamp(0.0, 1.0) } else { 0.0 };
    Ok(VoteOutput {
        unspsc_id,
        etim_id: winner(&etim).map(|(id, _)| id),
        confidence: (confidence * 1000.0).round() / 1000.0,
        voters,
        rationale: format!("weighted vote of {voters} similar classified products: {}", names.join(", ")),
    })
}

// ---------------------------------------------------------------------------------------------
// EvaluateRules

/// Input of `EvaluateRules`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesInput {
    /// The product row.
    pub product: Value,
    /// ComplianceRule rows that apply to it: those of its category and of every ancestor.
    pub rules: Vec<Value>,
    /// SafetyStandard rows the rules name.
    #[serde(default)]
    pub standards: Vec<Value>,
    /// The Category rows above the product's category that the rules were collected from
    /// (a `CategoryGraphNode`'s `neighbors.*.record` along `CHILD_OF`). When one of them has a
    /// parent that is neither among them nor the product's category, the traversal stopped
    /// short of the root, rules further up were not collected, and the check fails.
    #[serde(default)]
    pub ancestors: Vec<Value>,
    /// The rules List's `next_cursor`: set when more rules apply than its page held, and the
    /// check fails rather than judge the product on part of its rules.
    #[serde(default)]
    pub rules_next_cursor: Option<String>,
}

/// The verdict on one rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RuleResult {
    /// The rule's id.
    pub rule_id: i64,
    /// Its name.
    pub rule: String,
    /// The standard it requires, by code.
    pub standard: Option<String>,
    /// The category the rule is attached to: the product's own, or an ancestor's.
    pub category_id: Option<i64>,
    /// `info`, `warning` or `blocking`.
    pub severity: String,
    /// Whether the product meets it.
    pub passed: bool,
    /// What was compared.
    pub detail: String,
}

/// Output of `EvaluateRules`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RulesOutput {
    /// The product's id.
    pub product_id: i64,
    /// False when a blocking rule failed.
    pub passed: bool,
    /// Blocking rules failed.
    pub blocking_failures: usize,
    /// One line per rule, in rule id order.
    pub results: Vec<RuleResult>,
}

/// Checks one requirement `{attribute, min|max|equals}` against the product's attributes.
fn check(requirement: &Value, attributes: &Value) -> (bool, String) {
    let Some(attribute) = requirement.get("attribute").and_then(Value::as_str) else {
        return (false, format!("requirement {requirement} names no attribute"));
    };
    let Some(actual) = attributes.get(attribute).filter(|v| !v.is_null()) else {
        return (false, format!("{attribute} is not stated"));
    };
    if let Some(expected) = requirement.get("equals") {
        return (actual == expected, format!("{attribute} = {actual}, required {expected}"));
    }
    let Some(value) = actual.as_f64() else {
        return (false, format!("{attribute} = {actual} is not a number"));
    };
    if let Some(min) = requirement.get("min").and_then(Value::as_f64)
        && value < min
    {
        return (false, format!("{attribute} = {value}, required at least {min}"));
    }
    if let Some(max) = requirement.get("max").and_then(Value::as_f64)
        && value > max
    {
        return (false, format!("{attribute} = {value}, allowed at most {max}"));
    }
    (true, format!("{attribute} = {value} within {requirement}"))
}

/// The first ancestor whose parent was not reached, as `(ancestor, parent)`: the category
/// tree goes on above what the traversal collected. A parent that is the product's category
/// or another ancestor closes a cycle, which is complete as it is.
fn unreached_parent(category: Option<i64>, ancestors: &[Value]) -> Option<(i64, i64)> {
    let reached: BTreeSet<i64> = ancestors.iter().filter_map(|a| a.get("id")?.as_i64()).chain(category).collect();
    ancestors.iter().find_map(|a| {
        let id = a.get("id")?.as_i64()?;
        let parent = a.get("parent_id")?.as_i64()?;
        (!reached.contains(&parent)).then_some((id, parent))
    })
}

/// Evaluates every rule against the product.
pub fn evaluate_rules(input: RulesInput) -> Result<RulesOutput, String> {
    let product_id = input.product.get("id").and_then(Value::as_i64).ok_or("the product has no id")?;
    let category = input.product.get("category_id").and_then(Value::as_i64);
    if let Some((ancestor, parent)) = unreached_parent(category, &input.ancestors) {
        return Err(format!(
            "the rules of category {parent} (the parent of category {ancestor}) and above were not collected: the category tree above the product's category is deeper than the traversal reaches, and a verdict without those rules could pass a product that fails them"
        ));
    }
    if input.rules_next_cursor.is_some() {
        return Err(
            "more rules apply than the rules List returned in one page, and a verdict on part of them could pass a product that fails the others".into(),
        );
    }
    let attributes = input.product.get("attributes").cloned().unwrap_or(Value::Null);
    let standards: BTreeMap<i64, &str> = input
        .standards
        .iter()
        .filter_map(|s| Some((s.get("id")?.as_i64()?, s.get("code")?.as_str()?)))
        .collect();
    let mut results: Vec<RuleResult> = input
        .rules
        .iter()
        .filter(|r| r.get("active").and_then(Value::as_bool).unwrap_or(true))
        .map(|rule| {
            let (passed, detail) = check(rule.get("requirement").unwrap_or(&Value::Null), &attributes);
            RuleResult {
                rule_id: rule.get("id").and_then(Value::as_i64).unwrap_or_default(),
                rule: rule.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                standard: rule
                    .get("standard_id")
                    .and_then(Value::as_i64)
                    .and_then(|id| standards.get(&id))
                    .map(|s| s.to_string()),
                category_id: rule.get("category_id").and_then(Value::as_i64),
                severity: rule.get("severity").and_then(Value::as_str).unwrap_or("info").to_string(),
                passed,
                detail,
            }
        })
        .collect();
    results.sort_by_key(|r| r.rule_id);
    let blocking_failures = results.iter().filter(|r| !r.passed && r.severity == "blocking").count();
    Ok(RulesOutput {
        product_id,
        passed: blocking_failures == 0,
        blocking_failures,
        results,
    })
}

// ---------------------------------------------------------------------------------------------
// RankRecommendations

fn default_limit() -> usize {
    5
}

/// Input of `RankRecommendations`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RankInput {
    /// The project row.
    pub project: Value,
    /// Candidate products (a ProductSearchNode's `hits`).
    pub hits: Vec<Hit>,
    /// ComplianceRule rows of the project's category.
    #[serde(default)]
    pub rules: Vec<Value>,
    /// Most recommendations.
    #[serde(default = "default_limit")]
    pub limit: usize,
}

/// Output of `RankRecommendations`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RankOutput {
    /// Recommendation rows, best first, ready for a RecommendationBulkUpsertNode.
    pub recommendations: Vec<Value>,
    /// Candidates left out because a blocking rule failed.
    pub excluded: usize,
}

/// Score = 0.6 × similarity + 0.4 × share of rules passed; a failed blocking rule excludes.
pub fn rank(input: RankInput) -> Result<RankOutput, String> {
    let project_id = input.project.get("id").and_then(Value::as_i64).ok_or("the project has no id")?;
    if input.limit == 0 || input.limit > 100 {
        return Err(format!("limit must be 1 to 100, got {}", input.limit));
    }
    let mut ranked = Vec::new();
    let mut excluded = 0;
    for hit in &input.hits {
        let report = evaluate_rules(RulesInput {
            product: hit.record.clone(),
            rules: input.rules.clone(),
            ..RulesInput::default()
        })?;
        if !report.passed {
            excluded += 1;
            continue;
        }
        let similarity = (1.0 - hit.distance).clamp(0.0, 1.0);
        let compliance = if report.results.is_empty() {
            1.0
        } else {
            report.results.iter().filter(|r| r.passed).count() as f64 / report.results.len() as f64
        };
        let score = ((0.6 * similarity + 0.4 * compliance) * 1000.0).round() / 1000.0;
        let name = hit.record.get("name").and_then(Value::as_str).unwrap_or("?");
        ranked.push((
            score,
            serde_json::json!({
                "project_id": project_id,
                "product_id": report.product_id,
                "score": score,
                "rationale": format!("{name}: similarity {similarity:.2}, {} of {} rules met", report.results.iter().filter(|r| r.passed).count(), report.results.len()),
                "status": "proposed"
            }),
        ));
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.truncate(input.limit);
    Ok(RankOutput {
        recommendations: ranked.into_iter().map(|(_, r)| r).collect(),
        excluded,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_vote_is_weighted_by_similarity() {
        let out = vote(VoteInput {
            hits: vec![
                Hit {
                    record: json!({"id": 1, "sku": "A"}),
                    distance: 0.1,
                },
                Hit {
                    record: json!({"id": 2, "sku": "B"}),
                    distance: 0.7,
                },
                Hit {
                    record: json!({"id": 3, "sku": "C"}),
                    distance: 0.6,
                },
                Hit {
                    record: json!({"id": 4, "sku": "D"}),
                    distance: 0.2,
                },
            ],
            classifications: vec![
                json!({"product_id": 1, "unspsc_id": 10, "etim_id": 100}),
                json!({"product_id": 2, "unspsc_id": 20, "etim_id": null}),
                json!({"product_id": 3, "unspsc_id": 20, "etim_id": 200}),
            ],
        })
        .unwrap();
        // 10 gets 0.9; 20 gets 0.3 + 0.4 = 0.7; product 4 is unclassified and does not vote.
        assert_eq!((out.unspsc_id, out.etim_id, out.voters), (10, Some(100), 3));
        assert!((out.confidence - 0.9 / 1.6).abs() < 1e-3);
        assert!(
            vote(VoteInput {
                hits: vec![],
                classifications: vec![]
            })
            .is_err()
        );
    }

    #[test]
    fn rules_compare_minimum_maximum_and_equality() {
        let product = json!({"id": 7, "attributes": {"ip_rating": 44, "voltage": 400, "ce_marked": true}});
        let rules = vec![
            json!({"id": 1, "name": "IP", "severity": "blocking", "requirement": {"attribute": "ip_rating", "min": 54}, "standard_id": 3}),
            json!({"id": 2, "name": "V", "severity": "warning", "requirement": {"attribute": "voltage", "max": 230}}),
            json!({"id": 3, "name": "CE", "severity": "blocking", "requirement": {"attribute": "ce_marked", "equals": true}}),
            json!({"id": 4, "name": "W", "severity": "info", "requirement": {"attribute": "power_w", "max": 10}}),
        ];
        let out = evaluate_rules(RulesInput {
            product,
            rules,
            standards: vec![json!({"id": 3, "code": "IEC 60529"})],
            ..RulesInput::default()
        })
        .unwrap();
        let passed: Vec<bool> = out.results.iter().map(|r| r.passed).collect();
        assert_eq!(passed, [false, false, true, false]);
        assert_eq!((out.passed, out.blocking_failures), (false, 1));
        assert_eq!(out.results[0].standard.as_deref(), Some("IEC 60529"));
        assert!(out.results[3].detail.contains("not stated"));
    }

    #[test]
    fn rules_collected_from_part_of_the_category_tree_fail_the_check() {
        let product = json!({"id": 7, "category_id": 30, "attributes": {}});
        let rules = vec![json!({"id": 1, "category_id": 10, "severity": "info", "requirement": {"attribute": "x"}})];
        let check = |ancestors: Vec<Value>| {
            evaluate_rules(RulesInput {
                product: product.clone(),
                rules: rules.clone(),
                ancestors,
                ..RulesInput::default()
            })
        };
        // Up to a root, and around a cycle: complete.
        let to_the_root = check(vec![json!({"id": 20, "parent_id": 10}), json!({"id": 10, "parent_id": null})]).unwrap();
        assert_eq!(to_the_root.results[0].category_id, Some(10));
        assert!(check(vec![json!({"id": 20, "parent_id": 10}), json!({"id": 10, "parent_id": 30})]).is_ok());
        // Category 10 has a parent the traversal did not reach.
        let err = check(vec![json!({"id": 20, "parent_id": 10}), json!({"id": 10, "parent_id": 5})]).unwrap_err();
        assert!(
            err.starts_with("the rules of category 5 (the parent of category 10) and above were not collected"),
            "{err}"
        );
        let err = evaluate_rules(RulesInput {
            product: product.clone(),
            rules: rules.clone(),
            rules_next_cursor: Some("abc".into()),
            ..RulesInput::default()
        })
        .unwrap_err();
        assert!(err.starts_with("more rules apply than the rules List returned"), "{err}");
    }
}
