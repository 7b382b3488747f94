//! List: filter, sort, keyset pagination and an optional total count.

use schemars::JsonSchema;
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::filter::{CheckedSort, Filter, SortKey};
use crate::model::record::Record;
use crate::node::Context;
use crate::nodes::{fetch_records, to_object};
use crate::sql::rows;

/// Rows per page when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page a List node returns.
pub const MAX_PAGE: u32 = 1000;

/// Input of a List node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// Which rows; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Sort keys; the primary key is always the last tie-breaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sort: Vec<SortKey>,
    /// Page size, 1 to 1000 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Continue after the page that returned this `next_cursor` (same filter and sort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Also count every row the filter matches.
    #[serde(default)]
    pub with_total: bool,
    /// Include soft-deleted rows.
    #[serde(default)]
    pub include_deleted: bool,
}

/// Output of a List node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model")]
#[schemars(bound = "M: Model")]
pub struct ListOutput<M: Model> {
    /// The page, in sort order.
    pub records: Vec<Record<M>>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// With `with_total`: how many rows match in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Lists one page of rows.
pub async fn run<M: Model>(ctx: &Context, input: ListInput) -> Result<ListOutput<M>> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    let limit = input.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::invalid(
            meta.name,
            "limit",
            format!("must be between 1 and {MAX_PAGE}, got {limit}"),
        ));
    }
    let sort = CheckedSort::check(meta, &input.sort)?;
    let store = ctx.stores().relational();

    let scope = (tenant, input.include_deleted);
    let filter = input.filter.as_ref();
    let page = rows::select_page(
        store.sql(),
        meta,
        scope,
        filter,
        &sort,
        input.after.as_deref(),
        i64::from(limit) + 1,
    )?;
    let total = if input.with_total {
        Some(rows::count_rows(store.sql(), meta, scope, filter)?)
    } else {
        None
    };

    let action = format!("listing {}", meta.table);
    let mut records = fetch_records::<M>(store.connection(), page, &action).await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        let last = records.last().expect("limit ≥ 1");
        let object = to_object(meta.name, &last.data)?;
        let values: Vec<Json> = sort
            .keys
            .iter()
            .map(|(f, _)| object.get(f.name).cloned().unwrap_or(Json::Null))
            .collect();
        Some(sort.cursor_after(values))
    } else {
        None
    };
    let total = match total {
        Some(count) => {
            let row = store
                .connection()
                .query_one_raw(count)
                .await
                .map_err(|e| Error::relational(&action, e))?;
            let n: i64 = row
                .map(|r| r.try_get("", "n"))
                .transpose()
                .map_err(|e| Error::relational(&action, e))?
                .unwrap_or(0);
            Some(n as u64)
        }
        None => None,
    };
    Ok(ListOutput {
        records,
        next_cursor,
        total,
    })
}
