//! The statement of an Aggregate: grouped count, sum, avg, min and max under a filter.

use sea_orm::{Statement, Value as SqlValue};

use crate::error::Result;
use crate::model::filter::{AggregateOp, Filter};
use crate::model::{FieldMeta, FieldType, ModelMeta};
use crate::sql::Sql;
use crate::sql::rows::{write_filter, write_scope};

/// `SELECT` the groups' fields as `"g0"`, `"g1"`, ... and each metric `(function, field,
/// result type)` as `"m0"`, `"m1"`, ... over the rows in scope that pass `filter`, grouped
/// and ordered by the group fields, at most `limit` groups.
pub(crate) fn select_groups(
    mut sql: Sql,
    meta: &'static ModelMeta,
    scope: (Option<&str>, bool),
    filter: Option<&Filter>,
    groups: &[&'static FieldMeta],
    metrics: &[(AggregateOp, Option<&'static FieldMeta>, FieldType)],
    limit: i64,
) -> Result<Statement> {
    let (tenant, include_deleted) = scope;
    sql.push("SELECT ");
    let mut first = true;
    for (i, g) in groups.iter().enumerate() {
        if !first {
            sql.push(", ");
        }
        first = false;
        sql.ident(g.name).push(&format!(" AS \"g{i}\""));
    }
    for (i, &(op, field, ty)) in metrics.iter().enumerate() {
        if !first {
            sql.push(", ");
        }
        first = false;
        let column = |sql: &mut Sql| match field {
            Some(f) => {
                sql.ident(f.name);
            }
            None => {
                sql.push("*");
            }
        };
        match op {
            AggregateOp::Count => {
                sql.push("COUNT(");
                column(&mut sql);
                sql.push(")");
            }
            AggregateOp::Sum | AggregateOp::Avg => {
                let cast = sql.column_type(if ty == FieldType::Integer {
                    FieldType::Integer
                } else {
                    FieldType::Float
                });
                sql.push("CAST(").push(if op == AggregateOp::Sum { "SUM(" } else { "AVG(" });
                column(&mut sql);
                sql.push(") AS ").push(cast).push(")");
            }
            AggregateOp::Min | AggregateOp::Max => {
                sql.push(if op == AggregateOp::Min { "MIN(" } else { "MAX(" });
                column(&mut sql);
                sql.push(")");
            }
        }
        sql.push(&format!(" AS \"m{i}\""));
    }
    sql.push(" FROM ").ident(meta.table).push(" WHERE ");
    write_scope(&mut sql, meta, tenant, include_deleted);
    write_filter(&mut sql, meta, filter)?;
    if !groups.is_empty() {
        let positions: Vec<String> = (1..=groups.len()).map(|i| i.to_string()).collect();
        sql.push(" GROUP BY ").push(&positions.join(", "));
        sql.push(" ORDER BY ").push(&positions.join(", "));
    }
    sql.push(" LIMIT ").param(SqlValue::BigInt(Some(limit)));

    Ok(sql.build())
}
