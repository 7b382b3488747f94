//! Delete: by id or filter; soft (marking `deleted_at`) for models that ask for it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use sea_orm::{ConnectionTrait, DatabaseTransaction};

use crate::consistency::projection::{ProjectionSet, RowState, read_states};
use crate::error::{Error, Result, StoreKind};
use crate::model::filter::Filter;
use crate::model::{Model, ModelMeta, OnDelete};
use crate::node::Context;
use crate::nodes::effect::{self, Recorded};
use crate::nodes::{commit_and_project, fetch_versions};
use crate::sql::write;

/// Input of a Delete node: exactly one of `id` or `filter`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteInput {
    /// Delete the row with this primary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Delete every row this filter matches; `{}` matches all rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Remove rows for good even when the model soft-deletes (soft-deleted rows included).
    #[serde(default)]
    pub hard: bool,
}

/// Output of a Delete node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeleteOutput {
    /// How many rows were deleted (0 when none matched).
    pub deleted: u64,
    /// Their primary keys.
    pub ids: Vec<i64>,
    /// Whether the rows were soft-deleted (still stored, hidden from reads).
    pub soft: bool,
    /// Projections (cache, vector, graph) not applied yet: they failed, or
    /// [`crate::ProjectionMode::Background`] leaves them to the background projector. `sync`
    /// applies them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<StoreKind>,
    /// Rows of other models (or of this one) that named the removed rows and were dealt with
    /// as their relation's `on_delete` says: removed (`cascade`) or their foreign key cleared
    /// (`set_null`). Empty for a soft delete, which removes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<DependentRows>,
}

/// Rows a delete changed or removed because they named a removed row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DependentRows {
    /// Their model, e.g. `Recommendation`.
    pub model: String,
    /// The relation through which they named the removed rows, e.g. `RECOMMENDS`.
    pub relation: String,
    /// What was done to them: `cascade` (removed) or `set_null` (foreign key cleared).
    pub on_delete: OnDelete,
    /// Their primary keys.
    pub ids: Vec<i64>,
}

/// Deletes by id or filter. Under an effect key (see [`effect`]) it deletes once: executed
/// again, it returns what it deleted the first time.
pub async fn run<M: Model>(ctx: &Context, input: DeleteInput) -> Result<DeleteOutput> {
    effect::once(ctx, delete::<M>(ctx, input)).await
}

async fn delete<M: Model>(ctx: &Context, input: DeleteInput) -> Result<DeleteOutput> {
    let meta = M::meta();
    let tenant = ctx.tenant_scope(meta)?;
    let soft = meta.soft_delete && !input.hard;
    let store = ctx.stores().relational();
    let rows = match (input.id, &input.filter) {
        (Some(id), None) => write::Rows::Id(id),
        (None, Some(filter)) => write::Rows::Filter(filter),
        (Some(_), Some(_)) => return Err(Error::invalid(meta.name, "input", "give either id or filter, not both")),
        (None, None) => return Err(Error::invalid(meta.name, "input", "give id or filter to say which rows to delete")),
    };
    let action = format!("deleting from {}", meta.table);
    let tx = store.begin().await.map_err(|e| Error::relational(&action, e))?;
    let models = ctx.stores().handles().models();
    let mut dependents = Dependents::default();
    let statement = if !soft
        && models
            .iter()
            .any(|m| m.relations.iter().any(|r| (r.target_meta)().name == meta.name))
    {
        // Rows other rows may name go for good: which ones is fixed (and locked) first, so
        // that the rows naming them are dealt with as their relations declare before they go.
        let ids = lock_ids(&tx, store.sql(), meta, rows, tenant, &action).await?;
        if ids.is_empty() {
            tx.commit().await.map_err(|e| Error::relational(&action, e))?;
            return Ok(DeleteOutput {
                deleted: 0,
                ids: Vec::new(),
                soft,
                pending: Vec::new(),
                dependents: Vec::new(),
            });
        }
        dependents.settle_before_removing(ctx, &tx, &models, meta, &ids, 0).await?;
        write::delete_rows(store.sql(), meta, write::Rows::Ids(&ids), tenant, soft)?
    } else {
        write::delete_rows(store.sql(), meta, rows, tenant, soft)?
    };
    let written = fetch_versions(&tx, statement, meta.primary_key, &action).await?;
    let states: Vec<RowState> = written
        .iter()
        .map(|&(id, version)| RowState {
            id,
            tenant: tenant.map(str::to_owned),
            // A removed row's cache tombstone must outrank the version it had.
            version: if soft { version } else { version + 1 },
            fields: None,
        })
        .collect();
    let mut out = DeleteOutput {
        deleted: written.len() as u64,
        ids: written.iter().map(|(id, _)| *id).collect(),
        soft,
        pending: Vec::new(),
        dependents: std::mem::take(&mut dependents.report),
    };
    let outbox = dependents.enqueue(ctx, &tx).await?;
    let tx = match effect::record(ctx, tx, &out).await? {
        Recorded::Commit(tx) => tx,
        Recorded::Done(first) => return Ok(first),
    };
    let set = ProjectionSet::for_model(ctx.stores().handles(), meta);
    let mut pending = commit_and_project(ctx, tx, meta, tenant, states, set, &action).await?;
    for kind in Dependents::project(ctx, outbox).await {
        if !pending.contains(&kind) {
            pending.push(kind);
        }
    }
    out.pending = pending;
    Ok(out)
}

/// Cascades deeper than this are refused (a chain of models, or a tree of rows of one model
/// naming each other, this deep is a mistake more likely than a design).
const MAX_CASCADE_DEPTH: usize = 64;

/// The rows of other models that a delete changed or removed because they named the removed
/// rows (`on_delete = "cascade"` or `"set_null"`), by model: their projections follow.
#[derive(Default)]
struct Dependents {
    rows: Vec<(&'static ModelMeta, Vec<Dependent>)>,
    report: Vec<DependentRows>,
}

/// A row a delete changed or removed: its primary key and, for multi-tenant models, tenant.
type Dependent = (i64, Option<String>);

/// Dependents of one model and tenant whose outbox records are written, to apply after the
/// commit.
struct Enqueued {
    meta: &'static ModelMeta,
    ids: Vec<i64>,
    outbox_ids: Vec<i64>,
    set: ProjectionSet,
}

impl Dependents {
    /// Before rows `ids` of `meta` are removed: refuses when a relation that restricts deletes
    /// names one of them, sets to NULL the foreign keys of `set_null` relations, and removes
    /// the rows of `cascade` relations (after dealing with the rows naming those, in turn).
    async fn settle_before_removing(
        &mut self,
        ctx: &Context,
        tx: &DatabaseTransaction,
        models: &[&'static ModelMeta],
        meta: &'static ModelMeta,
        ids: &[i64],
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_CASCADE_DEPTH {
            return Err(Error::invalid(
                meta.name,
                "delete",
                format!(
                    "the cascade of deletes goes deeper than {MAX_CASCADE_DEPTH} levels at {}",
                    meta.name
                ),
            ));
        }
        let store = ctx.stores().relational();
        for child in models {
            for relation in child.relations.iter().filter(|r| (r.target_meta)().name == meta.name) {
                let action = format!("finding the {} rows that name the {} rows deleted", child.name, meta.name);
                // One row is enough to refuse, unless the rows found may be among those
                // removed (a model naming itself), which are no obstacle.
                let limit = (relation.on_delete == OnDelete::Restrict && child.name != meta.name).then_some(1);
                let statement = write::naming_rows(store.sql(), child, relation.field, ids, limit);
                let found = tx.query_all_raw(statement).await.map_err(|e| Error::relational(&action, e))?;
                let mut named: Vec<Dependent> = Vec::with_capacity(found.len());
                for row in &found {
                    let id: i64 = row.try_get("", "id").map_err(|e| Error::relational(&action, e))?;
                    let tenant: Option<String> = if child.multi_tenant {
                        Some(row.try_get("", "tenant_id").map_err(|e| Error::relational(&action, e))?)
                    } else {
                        None
                    };
                    named.push((id, tenant));
                }
                // A row of a model that names itself, removed in the same delete, is no obstacle.
                if child.name == meta.name {
                    named.retain(|(id, _)| !ids.contains(id));
                }
                if named.is_empty() {
                    continue;
                }
                let child_ids: Vec<i64> = named.iter().map(|(id, _)| *id).collect();
                match relation.on_delete {
                    OnDelete::Restrict => {
                        return Err(Error::invalid(
                            meta.name,
                            "delete",
                            format!(
                                "{} {} names a row to delete in '{}' ({}), and the relation restricts deletes: delete or re-point such rows first, or declare on_delete = \"cascade\" or \"set_null\" on {}.{}",
                                child.name, child_ids[0], relation.field, relation.name, child.name, relation.field
                            ),
                        ));
                    }
                    OnDelete::SetNull => {
                        let action = format!(
                            "clearing {}.{} of the rows that named deleted {} rows",
                            child.table, relation.field, meta.name
                        );
                        let statement = write::clear_reference(store.sql(), child, relation.field, &child_ids);
                        tx.execute_raw(statement).await.map_err(|e| Error::relational(&action, e))?;
                    }
                    OnDelete::Cascade => {
                        Box::pin(self.settle_before_removing(ctx, tx, models, child, &child_ids, depth + 1)).await?;
                        let action = format!("deleting the {} rows that named deleted {} rows", child.name, meta.name);
                        let statement = write::delete_rows(store.sql(), child, write::Rows::Ids(&child_ids), None, false)?;
                        tx.query_all_raw(statement).await.map_err(|e| Error::relational(&action, e))?;
                    }
                }
                self.add(child, relation, named);
            }
        }
        Ok(())
    }

    fn add(&mut self, meta: &'static ModelMeta, relation: &'static crate::model::RelationMeta, rows: Vec<Dependent>) {
        self.report.push(DependentRows {
            model: meta.name.to_owned(),
            relation: relation.name.to_owned(),
            on_delete: relation.on_delete,
            ids: rows.iter().map(|(id, _)| *id).collect(),
        });
        match self.rows.iter_mut().find(|(m, _)| m.name == meta.name) {
            Some((_, all)) => all.extend(rows),
            None => self.rows.push((meta, rows)),
        }
    }

    /// Records the dependents' projections in the outbox, inside the delete's transaction;
    /// returns what [`Dependents::project`] applies after the commit.
    async fn enqueue(self, ctx: &Context, tx: &DatabaseTransaction) -> Result<Vec<Enqueued>> {
        let outbox = ctx.stores().outbox();
        let mut out = Vec::new();
        for (meta, mut rows) in self.rows {
            let set = ProjectionSet::for_model(ctx.stores().handles(), meta);
            rows.sort();
            rows.dedup();
            let mut tenants: Vec<Option<String>> = rows.iter().map(|(_, t)| t.clone()).collect();
            tenants.sort();
            tenants.dedup();
            for tenant in tenants {
                let ids: Vec<i64> = rows.iter().filter(|(_, t)| *t == tenant).map(|(id, _)| *id).collect();
                let outbox_ids = outbox.enqueue(tx, meta, tenant.as_deref(), &ids, set).await?;
                out.push(Enqueued {
                    meta,
                    ids,
                    outbox_ids,
                    set,
                });
            }
        }
        Ok(out)
    }

    /// After the commit: applies the dependents' projections from their rows' current state;
    /// returns the projections left pending (a failure leaves them to `sync`).
    async fn project(ctx: &Context, enqueued: Vec<Enqueued>) -> Vec<StoreKind> {
        let mut pending: Vec<StoreKind> = Vec::new();
        for Enqueued {
            meta,
            ids,
            outbox_ids,
            set,
        } in enqueued
        {
            let left = match read_states(ctx.stores().handles(), meta, &ids).await {
                Ok(states) => ctx.stores().outbox().settle(meta, &outbox_ids, states, set).await,
                Err(e) => {
                    tracing::warn!(model = meta.name, error = %e, "projections of rows changed by a delete left to sync");
                    set.kinds()
                }
            };
            for kind in left {
                if !pending.contains(&kind) {
                    pending.push(kind);
                }
            }
        }
        pending
    }
}

/// The primary keys of the rows a delete removes, locked.
async fn lock_ids(
    tx: &DatabaseTransaction,
    sql: crate::sql::Sql,
    meta: &'static ModelMeta,
    rows: write::Rows<'_>,
    tenant: Option<&str>,
    action: &str,
) -> Result<Vec<i64>> {
    let statement = write::lock_ids(sql, meta, rows, tenant, true)?;
    let found = tx.query_all_raw(statement).await.map_err(|e| Error::relational(action, e))?;
    found
        .iter()
        .map(|row| row.try_get::<i64>("", "id").map_err(|e| Error::relational(action, e)))
        .collect()
}
