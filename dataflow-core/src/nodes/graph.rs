//! Graph: link and unlink rows along declared relations (the foreign key is written in the
//! relational store, the edge follows through the outbox), and traverse the graph: neighbours
//! up to a depth, shortest paths.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result, StoreKind};
use crate::model::record::Record;
use crate::model::values::printable;
use crate::model::{Model, ModelMeta};
use crate::node::Context;
use crate::nodes::update::{self, UpdateInput};
use crate::nodes::{select_by_ids, select_json_by_ids, to_object};
use crate::store::graph::{Direction, MAX_DEPTH, NeighborQuery, PathQuery};

/// Neighbours returned when `limit` is not given.
pub const DEFAULT_NEIGHBORS: usize = 100;
/// Largest `limit`.
pub const MAX_NEIGHBORS: usize = 1000;

fn one() -> u32 {
    1
}

fn default_path_depth() -> u32 {
    MAX_DEPTH
}

/// Input of a Graph node: one operation, named by `op`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum GraphInput {
    /// Points the row's `relation` at the row `target_id` of the relation's target model:
    /// writes the foreign key (checked like an Update) and the edge follows.
    Link {
        /// The row's primary key.
        id: i64,
        /// A relation the model declares, e.g. `IN_CATEGORY`.
        relation: String,
        /// The target row's primary key; the row must exist (for this tenant).
        target_id: i64,
    },
    /// Removes the row's `relation` (clears its foreign key, which must be optional). With
    /// `target_id`, only when the relation points at that row.
    Unlink {
        /// The row's primary key.
        id: i64,
        /// A relation the model declares.
        relation: String,
        /// Only unlink from this target.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_id: Option<i64>,
    },
    /// Rows reachable from the row within `depth` hops.
    Neighbors {
        /// The row's primary key.
        id: i64,
        /// Follow only this relation (declared by this model, or by a model that points at it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relation: Option<String>,
        /// `out` (along the relations this model declares, default), `in` or `both`.
        #[serde(default)]
        direction: Direction,
        /// Hops, 1 to 5 (default 1).
        #[serde(default = "one")]
        depth: u32,
        /// Most neighbours, 1 to 1000 (default 100), nearest first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
        /// Also return each neighbour's row (neighbours whose row is gone are left out).
        #[serde(default)]
        hydrate: bool,
    },
    /// A shortest path from the row to another row, ignoring directions.
    Path {
        /// The row's primary key.
        id: i64,
        /// The other row's model, e.g. `Category`.
        target_model: String,
        /// The other row's primary key.
        target_id: i64,
        /// Follow only this relation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relation: Option<String>,
        /// Most hops, 1 to 5 (default 5).
        #[serde(default = "default_path_depth")]
        max_depth: u32,
        /// Also return each row on the path.
        #[serde(default)]
        hydrate: bool,
    },
}

/// A row reached by a traversal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GraphNeighbor {
    /// Its model, e.g. `Category`.
    pub model: String,
    /// Its primary key.
    pub id: i64,
    /// Fewest hops from the start row.
    pub depth: u32,
    /// With `hydrate`: the row as stored (fields, version, timestamps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Json>,
}

/// One row on a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PathStep {
    /// Its model.
    pub model: String,
    /// Its primary key.
    pub id: i64,
    /// With `hydrate`: the row as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Json>,
}

/// A path found by `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PathOutput {
    /// The rows from start to end.
    pub steps: Vec<PathStep>,
    /// The relation crossed at each hop (`steps.len() - 1` of them).
    pub relations: Vec<String>,
}

/// Output of a Graph node; which fields are set depends on the operation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model")]
#[schemars(bound = "M: Model")]
pub struct GraphOutput<M: Model> {
    /// `link`/`unlink`: the row after the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record<M>>,
    /// `link`/`unlink`: whether the relation changed.
    #[serde(default)]
    pub changed: bool,
    /// `neighbors`: the rows reached, nearest first. Always present, empty when none was
    /// reached (and for the other operations), so that a connection from it always delivers.
    #[serde(default)]
    pub neighbors: Vec<GraphNeighbor>,
    /// `path`: the path, or `null` when there is none within the depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathOutput>,
    /// `link`/`unlink`: projections not applied yet: they failed, or
    /// [`crate::ProjectionMode::Background`] leaves them to the background projector. `sync`
    /// applies them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<StoreKind>,
}

impl<M: Model> GraphOutput<M> {
    fn empty() -> Self {
        GraphOutput {
            record: None,
            changed: false,
            neighbors: Vec::new(),
            path: None,
            pending: Vec::new(),
        }
    }
}

/// Runs one graph operation.
pub async fn run<M: Model>(ctx: &Context, input: GraphInput) -> Result<GraphOutput<M>> {
    let meta = M::meta();
    ctx.tenant_scope(meta)?;
    if ctx.stores().handles().model(meta.name).is_none() {
        ctx.stores().register_models(&[meta]);
    }
    match input {
        GraphInput::Link { id, relation, target_id } => link::<M>(ctx, id, &relation, Some(target_id), None).await,
        GraphInput::Unlink { id, relation, target_id } => link::<M>(ctx, id, &relation, None, target_id).await,
        GraphInput::Neighbors {
            id,
            relation,
            direction,
            depth,
            limit,
            hydrate,
        } => neighbors::<M>(ctx, id, relation.as_deref(), direction, depth, limit, hydrate).await,
        GraphInput::Path {
            id,
            target_model,
            target_id,
            relation,
            max_depth,
            hydrate,
        } => path::<M>(ctx, id, (&target_model, target_id), relation.as_deref(), max_depth, hydrate).await,
    }
}

/// The rows around `id` up to `depth` steps away (see [`GraphInput::Neighbors`]).
async fn neighbors<M: Model>(
    ctx: &Context,
    id: i64,
    relation: Option<&str>,
    direction: Direction,
    depth: u32,
    limit: Option<usize>,
    hydrate: bool,
) -> Result<GraphOutput<M>> {
    let meta = M::meta();
    check_depth(meta, "depth", depth)?;
    let limit = limit.unwrap_or(DEFAULT_NEIGHBORS);
    if !(1..=MAX_NEIGHBORS).contains(&limit) {
        return Err(Error::invalid(
            meta.name,
            "limit",
            format!("must be between 1 and {MAX_NEIGHBORS}, got {limit}"),
        ));
    }
    let relation = relation.map(|r| traversable_relation(ctx, meta, r, direction)).transpose()?;
    let graph = ctx.stores().handles().require_graph(meta.name)?;
    require_row(ctx, meta, id).await?;
    let found = graph
        .neighbors(&NeighborQuery {
            label: meta.name,
            id,
            relation,
            direction,
            depth,
            tenant: ctx.tenant(),
            limit,
        })
        .await?;
    let mut neighbors: Vec<GraphNeighbor> = found
        .into_iter()
        .map(|n| GraphNeighbor {
            model: n.label,
            id: n.id,
            depth: n.depth,
            record: None,
        })
        .collect();
    if hydrate {
        let pairs: Vec<(String, i64)> = neighbors.iter().map(|n| (n.model.clone(), n.id)).collect();
        let rows = hydrate_rows(ctx, &pairs).await?;
        neighbors.retain_mut(|n| match rows.get(&(n.model.clone(), n.id)) {
            Some(row) => {
                n.record = Some(row.clone());
                true
            }
            None => false,
        });
    }
    Ok(GraphOutput {
        neighbors,
        ..GraphOutput::empty()
    })
}

/// The shortest path from `id` to `target` (model name and id; see [`GraphInput::Path`]).
async fn path<M: Model>(
    ctx: &Context,
    id: i64,
    target: (&str, i64),
    relation: Option<&str>,
    max_depth: u32,
    hydrate: bool,
) -> Result<GraphOutput<M>> {
    let meta = M::meta();
    let (target_model, target_id) = target;
    check_depth(meta, "max_depth", max_depth)?;
    let target = ctx.stores().handles().model(target_model).ok_or_else(|| {
        let known: Vec<&str> = ctx.stores().handles().models().iter().map(|m| m.name).collect();
        Error::invalid(
            meta.name,
            "target_model",
            format!("unknown model '{}' (registered: {})", printable(target_model), known.join(", ")),
        )
    })?;
    let relation = relation
        .map(|r| any_relation(ctx, r))
        .transpose()
        .map_err(|m| Error::invalid(meta.name, "relation", m))?;
    let graph = ctx.stores().handles().require_graph(meta.name)?;
    require_row(ctx, meta, id).await?;
    require_row(ctx, target, target_id).await?;
    let found = graph
        .shortest_path(&PathQuery {
            from: (meta.name, id),
            to: (target.name, target_id),
            relation,
            max_depth,
            tenant: ctx.tenant(),
        })
        .await?;
    let Some(found) = found else {
        return Ok(GraphOutput::empty());
    };
    let rows = if hydrate {
        hydrate_rows(ctx, &found.nodes).await?
    } else {
        HashMap::new()
    };
    let steps = found
        .nodes
        .into_iter()
        .map(|(model, id)| PathStep {
            record: rows.get(&(model.clone(), id)).cloned(),
            model,
            id,
        })
        .collect();
    Ok(GraphOutput {
        path: Some(PathOutput {
            steps,
            relations: found.relations,
        }),
        ..GraphOutput::empty()
    })
}

fn check_depth(meta: &'static ModelMeta, part: &'static str, depth: u32) -> Result<()> {
    if (1..=MAX_DEPTH).contains(&depth) {
        Ok(())
    } else {
        Err(Error::invalid(
            meta.name,
            part,
            format!("must be between 1 and {MAX_DEPTH}, got {depth}"),
        ))
    }
}

/// Link (`target = Some`) or unlink (`target = None`, optionally only from `only_from`).
async fn link<M: Model>(ctx: &Context, id: i64, relation: &str, target: Option<i64>, only_from: Option<i64>) -> Result<GraphOutput<M>> {
    let meta = M::meta();
    let declared = meta.relation(relation).ok_or_else(|| {
        let names: Vec<&str> = meta.relations.iter().map(|r| r.name).collect();
        Error::invalid(
            meta.name,
            "relation",
            if names.is_empty() {
                format!("unknown relation '{}': {} declares no relations", printable(relation), meta.name)
            } else {
                format!(
                    "unknown relation '{}' ({} declares: {})",
                    printable(relation),
                    meta.name,
                    names.join(", ")
                )
            },
        )
    })?;
    let field = meta.field(declared.field).expect("the derive checks relation fields exist");
    let value = match target {
        Some(target_id) => {
            require_row(ctx, (declared.target_meta)(), target_id).await?;
            Json::from(target_id)
        }
        None => {
            if !field.nullable {
                return Err(Error::invalid(
                    meta.name,
                    "relation",
                    format!(
                        "{} cannot be unlinked: its field '{}' is required; link it to another {} instead",
                        declared.name, declared.field, declared.target
                    ),
                ));
            }
            if let Some(expected) = only_from {
                let current = select_by_ids::<M>(ctx, ctx.tenant_scope(meta)?, &[id])
                    .await?
                    .remove(&id)
                    .ok_or(Error::NotFound { model: meta.name, id })?;
                if to_object(meta.name, &current.data)?.get(declared.field).and_then(Json::as_i64) != Some(expected) {
                    return Ok(GraphOutput {
                        record: Some(current),
                        ..GraphOutput::empty()
                    });
                }
            }
            Json::Null
        }
    };
    let mut patch = Map::new();
    patch.insert(declared.field.to_owned(), value);
    let updated = update::run::<M>(ctx, UpdateInput::by_id(id, patch)).await?;
    Ok(GraphOutput {
        record: updated.record,
        changed: updated.updated > 0,
        pending: updated.pending,
        ..GraphOutput::empty()
    })
}

/// The row must exist and be visible to the context (tenant, not soft-deleted).
async fn require_row(ctx: &Context, meta: &'static ModelMeta, id: i64) -> Result<()> {
    let tenant = ctx.tenant_scope(meta)?;
    if select_json_by_ids(ctx, meta, tenant, &[id]).await?.contains_key(&id) {
        Ok(())
    } else {
        Err(Error::NotFound { model: meta.name, id })
    }
}

/// A relation name usable from `meta` in `direction`: declared by `meta` (out), or by a
/// registered model whose relation targets `meta` (in). The name returned comes from metadata.
fn traversable_relation(ctx: &Context, meta: &'static ModelMeta, name: &str, direction: Direction) -> Result<&'static str> {
    let outgoing: Vec<&'static str> = meta.relations.iter().map(|r| r.name).collect();
    let incoming: Vec<&'static str> = ctx
        .stores()
        .handles()
        .models()
        .iter()
        .flat_map(|m| m.relations.iter())
        .filter(|r| (r.target_meta)().name == meta.name)
        .map(|r| r.name)
        .collect();
    let usable: Vec<&'static str> = match direction {
        Direction::Out => outgoing,
        Direction::In => incoming,
        Direction::Both => outgoing.into_iter().chain(incoming).collect(),
    };
    usable.iter().copied().find(|r| *r == name).ok_or_else(|| {
        let way = match direction {
            Direction::Out => "outgoing",
            Direction::In => "incoming",
            Direction::Both => "outgoing or incoming",
        };
        Error::invalid(
            meta.name,
            "relation",
            if usable.is_empty() {
                format!("unknown relation '{}': {} has no {way} relations", printable(name), meta.name)
            } else {
                format!(
                    "unknown relation '{}' ({way} relations of {}: {})",
                    printable(name),
                    meta.name,
                    usable.join(", ")
                )
            },
        )
    })
}

/// A relation declared by any registered model; the name returned comes from metadata.
fn any_relation(ctx: &Context, name: &str) -> std::result::Result<&'static str, String> {
    let all: Vec<&'static str> = ctx
        .stores()
        .handles()
        .models()
        .iter()
        .flat_map(|m| m.relations.iter().map(|r| r.name))
        .collect();
    all.iter()
        .copied()
        .find(|r| *r == name)
        .ok_or_else(|| format!("unknown relation '{}' (known: {})", printable(name), all.join(", ")))
}

/// The visible rows of `(model, id)` pairs, as JSON, keyed by the pair. Pairs of models that
/// are not registered, or that the context cannot see, are left out.
async fn hydrate_rows(ctx: &Context, pairs: &[(String, i64)]) -> Result<HashMap<(String, i64), Json>> {
    let mut by_model: HashMap<&str, Vec<i64>> = HashMap::new();
    for (model, id) in pairs {
        by_model.entry(model.as_str()).or_default().push(*id);
    }
    let mut out = HashMap::new();
    for (model, ids) in by_model {
        let Some(meta) = ctx.stores().handles().model(model) else {
            continue;
        };
        let Ok(tenant) = ctx.tenant_scope(meta) else { continue };
        for (id, row) in select_json_by_ids(ctx, meta, tenant, &ids).await? {
            out.insert((meta.name.to_owned(), id), row);
        }
    }
    Ok(out)
}
