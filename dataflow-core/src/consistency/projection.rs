//! Projections: what the cache, the vector collection and the graph hold for a row, and how
//! they are brought in line with PostgreSQL.
//!
//! A projection is computed from the row's *current state* alone (present with these fields
//! at this version, or absent), so applying it twice changes nothing and applying an older
//! record after a newer one still converges. Two writers of one row may still apply their
//! states in the opposite order of their commits; `apply_verified` therefore re-reads the
//! row's version after applying and re-applies when it moved on, so the last write to land in
//! a projection is always the row's latest committed state.

use std::collections::HashMap;

use sea_orm::ConnectionTrait;
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result, StoreKind};
pub use crate::kind::ProjectionSet;
use crate::model::values::timestamp_to_json;
use crate::model::{FieldType, ModelMeta};
use crate::sql::rows::{self, column_json};
use crate::store::StoreHandles;
use crate::store::graph::{GraphNode, GraphRelation};
use crate::store::vector::{TENANT_KEY, VERSION_KEY, VectorDoc, metadata_fields};

/// Version given to the cache tombstone of a row that is gone and whose last version is not
/// known (a hard delete found by `sync`): it outranks every version the row could have had.
pub(crate) const GONE_VERSION: i64 = i64::MAX / 2;

/// How many times a row that keeps changing under a projection is re-read and re-applied
/// before it is left to `sync`.
const VERIFY_ROUNDS: usize = 3;

/// A row as the projections see it.
#[derive(Debug, Clone)]
pub(crate) struct RowState {
    /// The primary key.
    pub id: i64,
    /// The row's tenant (multi-tenant models).
    pub tenant: Option<String>,
    /// The row's version; for an absent row, the version its cache tombstone gets.
    pub version: i64,
    /// The model's fields as canonical JSON; `None` when the row is absent or soft-deleted.
    pub fields: Option<Map<String, Json>>,
}

impl ProjectionSet {
    /// The projections of `meta`'s rows with these stores: the cache and graph when
    /// configured, vectors when configured and the model has `embed` fields.
    pub fn for_model(stores: &StoreHandles, meta: &ModelMeta) -> Self {
        ProjectionSet {
            cache: stores.cache().is_some(),
            vector: stores.vector().is_some() && meta.has_embed_fields(),
            graph: stores.graph().is_some(),
        }
    }
}

/// What applying projections achieved.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// The projections now in step.
    pub done: ProjectionSet,
    /// The projections that failed, with why.
    pub failed: Vec<(StoreKind, Error)>,
}

impl Applied {
    /// The failed projections as a set.
    pub fn failed_set(&self) -> ProjectionSet {
        self.failed
            .iter()
            .fold(ProjectionSet::default(), |set, (kind, _)| set.or(ProjectionSet::only(*kind)))
    }

    /// One line naming each failure.
    pub fn error_summary(&self) -> String {
        self.failed.iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>().join("; ")
    }
}

/// The document text of a row: its `embed` fields, in field order, joined by newlines.
pub(crate) fn document(meta: &ModelMeta, fields: &Map<String, Json>) -> String {
    meta.fields
        .iter()
        .filter(|f| f.embed)
        .filter_map(|f| fields.get(f.name).and_then(Json::as_str))
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Makes a field value canonical for a projection (timestamps in one RFC 3339 form).
fn canonical(ty: FieldType, value: &Json) -> Json {
    match (ty, value) {
        (FieldType::Timestamp, Json::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Json::from(timestamp_to_json(t.with_timezone(&chrono::Utc))))
            .unwrap_or_else(|_| value.clone()),
        _ => value.clone(),
    }
}

/// The metadata a row's vector document carries: the primary key, indexed scalar fields that
/// are not null, the tenant and the version.
pub(crate) fn vector_metadata(meta: &'static ModelMeta, row: &RowState, fields: &Map<String, Json>) -> Map<String, Json> {
    let mut md = Map::new();
    for f in metadata_fields(meta) {
        match fields.get(f.name) {
            Some(v) if !v.is_null() => {
                md.insert(f.name.to_owned(), canonical(f.ty, v));
            }
            _ => {}
        }
    }
    md.insert(meta.primary_key.to_owned(), Json::from(row.id));
    if let Some(t) = &row.tenant {
        md.insert(TENANT_KEY.to_owned(), Json::from(t.clone()));
    }
    md.insert(VERSION_KEY.to_owned(), Json::from(row.version));
    md
}

/// The relations of `meta` as the graph needs them.
pub fn graph_relations(meta: &'static ModelMeta) -> Vec<GraphRelation> {
    meta.relations
        .iter()
        .map(|r| {
            let target = (r.target_meta)();
            GraphRelation {
                name: r.name,
                target: target.name,
                target_tenant: target.multi_tenant,
            }
        })
        .collect()
}

/// The node of a row: the primary key, indexed scalar fields that are not foreign keys (null
/// ones remove the property), tenant and version; one edge target per relation.
pub(crate) fn graph_node(meta: &'static ModelMeta, row: &RowState, fields: &Map<String, Json>) -> GraphNode {
    let mut props = Map::new();
    for f in metadata_fields(meta).filter(|f| !f.primary_key && meta.relation_on(f.name).is_none()) {
        props.insert(
            f.name.to_owned(),
            fields.get(f.name).map(|v| canonical(f.ty, v)).unwrap_or(Json::Null),
        );
    }
    props.insert(TENANT_KEY.to_owned(), row.tenant.clone().map(Json::from).unwrap_or(Json::Null));
    props.insert(VERSION_KEY.to_owned(), Json::from(row.version));
    let edges = meta
        .relations
        .iter()
        .map(|r| (r.name, fields.get(r.field).and_then(Json::as_i64)))
        .collect();
    GraphNode { id: row.id, props, edges }
}

/// Applies the projections in `set` for `rows`: the cache first (quick, and with a short
/// timeout that CPU work beside it could starve), then vectors and graph concurrently.
pub(crate) async fn apply(stores: &StoreHandles, meta: &'static ModelMeta, rows: &[RowState], set: ProjectionSet) -> Applied {
    let cache = async {
        if !set.cache {
            return None;
        }
        let cache = stores.cache()?;
        let keys: Vec<(String, i64)> = rows
            .iter()
            // A row just inserted (present at version 1) has no older entry to replace.
            .filter(|r| !(r.fields.is_some() && r.version == 1))
            .map(|r| (stores.cache_key(meta, r.tenant.as_deref(), r.id), r.version))
            .collect();
        if keys.is_empty() {
            return Some(Ok(()));
        }
        Some(cache.invalidate(&keys, meta.cache_ttl()).await)
    };
    let vector = async {
        if !set.vector {
            return None;
        }
        let store = stores.vector()?;
        Some(apply_vector(stores, store, meta, rows).await)
    };
    let graph = async {
        if !set.graph {
            return None;
        }
        let store = stores.graph()?;
        let mut present = Vec::new();
        let mut absent = Vec::new();
        for row in rows {
            match &row.fields {
                Some(fields) => present.push(graph_node(meta, row, fields)),
                None => absent.push(row.id),
            }
        }
        let result = async {
            if !present.is_empty() {
                store.upsert_nodes(meta.name, &graph_relations(meta), &present).await?;
            }
            if !absent.is_empty() {
                store.delete_nodes(meta.name, &absent).await?;
            }
            Ok::<(), Error>(())
        };
        Some(result.await)
    };
    let cache = cache.await;
    let (vector, graph) = tokio::join!(vector, graph);
    let mut applied = Applied::default();
    for (kind, outcome) in [(StoreKind::Cache, cache), (StoreKind::Vector, vector), (StoreKind::Graph, graph)] {
        match outcome {
            None => {}
            Some(Ok(())) => match kind {
                StoreKind::Cache => applied.done.cache = true,
                StoreKind::Vector => applied.done.vector = true,
                StoreKind::Graph => applied.done.graph = true,
                StoreKind::Relational => {}
            },
            Some(Err(e)) => applied.failed.push((kind, e)),
        }
    }
    applied
}

/// Upserts the vectors of `rows` present and removes those of rows absent, once the
/// collection's recorded embedder is this process's (see [`super::embedding`]).
pub(crate) async fn apply_vector(
    stores: &StoreHandles,
    store: &dyn crate::store::VectorStore,
    meta: &'static ModelMeta,
    rows: &[RowState],
) -> Result<()> {
    let mut texts = Vec::new();
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    for row in rows {
        match &row.fields {
            Some(fields) => {
                let text = document(meta, fields);
                if text.is_empty() {
                    // Nothing to embed: the row has no place in the collection.
                    remove.push(row.id.to_string());
                } else {
                    texts.push(text);
                    keep.push((row, fields));
                }
            }
            None => remove.push(row.id.to_string()),
        }
    }
    if !keep.is_empty() {
        super::embedding::check(stores, store, meta, super::embedding::Use::Write).await?;
        let vectors = stores.embed(texts.clone()).await?;
        let docs: Vec<VectorDoc> = keep
            .iter()
            .zip(vectors)
            .zip(texts.iter())
            .map(|(((row, fields), embedding), text)| VectorDoc {
                id: row.id.to_string(),
                embedding,
                document: text.clone(),
                metadata: vector_metadata(meta, row, fields),
            })
            .collect();
        store.upsert(meta.table, docs).await?;
    }
    if !remove.is_empty() {
        store.delete(meta.table, &remove).await?;
    }
    Ok(())
}

/// Applies projections, then checks that no row moved on while they were applied; rows that
/// did are re-read and re-applied. A projection whose rows keep moving is reported failed, so
/// its outbox record stays for `sync`.
pub(crate) async fn apply_verified(stores: &StoreHandles, meta: &'static ModelMeta, rows: Vec<RowState>, set: ProjectionSet) -> Applied {
    let applied = apply(stores, meta, &rows, set).await;
    verify(stores, meta, rows, applied).await
}

/// The check of [`apply_verified`] after projections of `rows` were applied (`applied`):
/// rows that moved on meanwhile are re-read and re-applied.
pub(crate) async fn verify(stores: &StoreHandles, meta: &'static ModelMeta, rows: Vec<RowState>, mut applied: Applied) -> Applied {
    // The cache needs no check: tombstones keep the highest version whatever the order.
    let checked = applied.done.and(ProjectionSet {
        cache: false,
        vector: true,
        graph: true,
    });
    if checked.is_empty() {
        return applied;
    }
    let mut expected = rows;
    for round in 0..=VERIFY_ROUNDS {
        let ids: Vec<i64> = expected.iter().map(|r| r.id).collect();
        let current = match current_versions(stores, meta, &ids).await {
            Ok(current) => current,
            Err(e) => {
                // Cannot tell whether the projections are current: leave them for sync.
                for kind in checked.kinds() {
                    applied.failed.push((
                        kind,
                        Error::Store {
                            store: kind,
                            action: format!("checking that the {} projection of {} is current", kind, meta.name),
                            message: e.to_string(),
                            transient: true,
                            busy: false,
                        },
                    ));
                }
                applied.done = applied.done.minus(checked);
                return applied;
            }
        };
        let stale: Vec<i64> = expected
            .iter()
            .filter(|r| match current.get(&r.id) {
                Some(&(version, present)) => present != r.fields.is_some() || (present && version != r.version),
                None => r.fields.is_some(),
            })
            .map(|r| r.id)
            .collect();
        if stale.is_empty() {
            return applied;
        }
        if round == VERIFY_ROUNDS {
            break;
        }
        expected = match read_states(stores, meta, &stale).await {
            Ok(fresh) => fresh,
            Err(_) => break,
        };
        let again = apply(stores, meta, &expected, checked).await;
        if !again.failed.is_empty() {
            applied.done = applied.done.minus(again.failed_set());
            applied.failed.extend(again.failed);
            return applied;
        }
    }
    for kind in checked.kinds() {
        applied.failed.push((
            kind,
            Error::Store {
                store: kind,
                action: format!("projecting {}", meta.name),
                message: "rows kept changing while their projection was applied; left for sync".into(),
                transient: true,
                busy: false,
            },
        ));
    }
    applied.done = applied.done.minus(checked);
    applied
}

/// `id → (version, present)` of the rows that exist (present: not soft-deleted).
async fn current_versions(stores: &StoreHandles, meta: &'static ModelMeta, ids: &[i64]) -> Result<HashMap<i64, (i64, bool)>> {
    let store = stores.relational();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(10_000) {
        let action = format!("checking versions of {}", meta.table);
        let rows = store
            .connection()
            .query_all_raw(rows::versions(store.sql(), meta, chunk))
            .await
            .map_err(|e| Error::relational(&action, e))?;
        for row in rows {
            let id: i64 = row.try_get("", "id").map_err(|e| Error::relational(&action, e))?;
            let version: i64 = row.try_get("", "version").map_err(|e| Error::relational(&action, e))?;
            let live = if meta.soft_delete {
                row.try_get::<bool>("", "live").map_err(|e| Error::relational(&action, e))?
            } else {
                true
            };
            out.insert(id, (version, live));
        }
    }
    Ok(out)
}

/// The current state of rows by primary key, read from the relational store whatever their
/// tenant; rows that do not exist come back absent with [`GONE_VERSION`].
pub(crate) async fn read_states(stores: &StoreHandles, meta: &'static ModelMeta, ids: &[i64]) -> Result<Vec<RowState>> {
    let store = stores.relational();
    let mut found: HashMap<i64, RowState> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(10_000) {
        let action = format!("reading {} rows to project", meta.table);
        let rows = store
            .connection()
            .query_all_raw(rows::states(store.sql(), meta, chunk))
            .await
            .map_err(|e| Error::relational(&action, e))?;
        for row in rows {
            let decode = || -> std::result::Result<RowState, sea_orm::DbErr> {
                let id: i64 = row.try_get("", meta.primary_key)?;
                let version: i64 = row.try_get("", "version")?;
                let tenant: Option<String> = if meta.multi_tenant {
                    Some(row.try_get("", "tenant_id")?)
                } else {
                    None
                };
                let deleted = meta.soft_delete && row.try_get::<Option<chrono::DateTime<chrono::Utc>>>("", "deleted_at")?.is_some();
                let fields = if deleted {
                    None
                } else {
                    let mut map = Map::new();
                    for f in meta.fields {
                        map.insert(f.name.to_owned(), column_json(&row, f.name, f.ty)?);
                    }
                    Some(map)
                };
                Ok(RowState {
                    id,
                    tenant,
                    version,
                    fields,
                })
            };
            let state = decode().map_err(|e| Error::relational(&action, e))?;
            found.insert(state.id, state);
        }
    }
    Ok(ids
        .iter()
        .map(|&id| {
            found.remove(&id).unwrap_or(RowState {
                id,
                tenant: None,
                version: GONE_VERSION,
                fields: None,
            })
        })
        .collect())
}
