//! Aggregate: group by fields; count, sum, avg, min and max under a filter.

use schemars::JsonSchema;
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::{Error, FieldErrors, Result};
pub use crate::model::filter::AggregateOp;
use crate::model::filter::Filter;
use crate::model::values::{printable, unknown_field_message};
use crate::model::{FieldMeta, FieldType, Model};
use crate::node::Context;
use crate::sql::aggregate;
use crate::sql::rows::column_json;

/// Most groups an Aggregate node returns.
pub const MAX_GROUPS: u32 = 10_000;

/// One computed value per group; named `count` or `{op}_{field}` in the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// The function.
    pub op: AggregateOp,
    /// The field it applies to (optional for `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Input of an Aggregate node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateInput {
    /// Fields to group by; one group over all rows when empty.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Values to compute per group; `count` when empty.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Which rows; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Include soft-deleted rows.
    #[serde(default)]
    pub include_deleted: bool,
    /// Most groups to return, 1 to 10,000 (default 1,000), ordered by the group-by fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Output of an Aggregate node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AggregateOutput {
    /// One object per group: the group-by fields and each metric.
    pub groups: Vec<Map<String, Json>>,
}

struct PlannedMetric {
    op: AggregateOp,
    field: Option<&'static FieldMeta>,
    output: String,
    ty: FieldType,
}

/// Computes grouped aggregates.
pub async fn run<M: Model>(ctx: &Context, input: AggregateInput) -> Result<AggregateOutput> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    let limit = input.limit.unwrap_or(1000);
    if !(1..=MAX_GROUPS).contains(&limit) {
        return Err(Error::invalid(
            meta.name,
            "limit",
            format!("must be between 1 and {MAX_GROUPS}, got {limit}"),
        ));
    }
    let mut errors = FieldErrors::default();
    let mut groups: Vec<&'static FieldMeta> = Vec::new();
    for name in &input.group_by {
        match meta.field(name) {
            None => errors.push(printable(name), unknown_field_message(meta, name)),
            Some(f) if f.ty == FieldType::Json => errors.push(f.name, "JSON fields cannot be grouped by"),
            Some(f) if groups.iter().any(|g| g.name == f.name) => errors.push(f.name, "appears twice in group_by"),
            Some(f) => groups.push(f),
        }
    }
    let wanted = if input.metrics.is_empty() {
        vec![Metric {
            op: AggregateOp::Count,
            field: None,
        }]
    } else {
        input.metrics.clone()
    };
    let mut metrics: Vec<PlannedMetric> = Vec::new();
    for m in &wanted {
        let field = match &m.field {
            None if m.op == AggregateOp::Count => None,
            None => {
                errors.push(m.op.name(), "needs a field");
                continue;
            }
            Some(name) => match meta.field(name) {
                Some(f) => Some(f),
                None => {
                    errors.push(printable(name), unknown_field_message(meta, name));
                    continue;
                }
            },
        };
        let ty = match (m.op, field) {
            (AggregateOp::Count, _) => FieldType::Integer,
            (AggregateOp::Sum, Some(f)) if f.ty.is_numeric() => f.ty,
            (AggregateOp::Avg, Some(f)) if f.ty.is_numeric() => FieldType::Float,
            (AggregateOp::Min | AggregateOp::Max, Some(f)) if f.ty.is_ordered() => f.ty,
            (op, Some(f)) => {
                errors.push(f.name, format!("{} does not apply to {} field", op.name(), f.ty.describe()));
                continue;
            }
            (_, None) => unreachable!("only count may omit its field"),
        };
        let output = match field {
            Some(f) => format!("{}_{}", m.op.name(), f.name),
            None => "count".to_owned(),
        };
        if metrics.iter().any(|p| p.output == output) || groups.iter().any(|g| g.name == output) {
            errors.push(output.clone(), "is computed twice");
            continue;
        }
        metrics.push(PlannedMetric {
            op: m.op,
            field,
            output,
            ty,
        });
    }
    if !errors.is_empty() {
        return Err(Error::invalid(meta.name, "aggregate", errors.to_string()));
    }

    let store = ctx.stores().relational();
    let planned: Vec<(AggregateOp, Option<&'static FieldMeta>, FieldType)> = metrics.iter().map(|m| (m.op, m.field, m.ty)).collect();
    let scope = (tenant, input.include_deleted);
    let statement = aggregate::select_groups(store.sql(), meta, scope, input.filter.as_ref(), &groups, &planned, i64::from(limit))?;
    let action = format!("aggregating {}", meta.table);
    let rows = store
        .connection()
        .query_all_raw(statement)
        .await
        .map_err(|e| Error::relational(&action, e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut group = Map::new();
        for (i, g) in groups.iter().enumerate() {
            group.insert(
                g.name.to_owned(),
                column_json(row, &format!("g{i}"), g.ty).map_err(|e| Error::relational(&action, e))?,
            );
        }
        for (i, m) in metrics.iter().enumerate() {
            group.insert(
                m.output.clone(),
                column_json(row, &format!("m{i}"), m.ty).map_err(|e| Error::relational(&action, e))?,
            );
        }
        out.push(group);
    }
    Ok(AggregateOutput { groups: out })
}
