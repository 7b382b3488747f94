//! The embedded graph store: nodes and edges in two tables of an SQLite file (usually the
//! embedded relational store's own), traversed with recursive CTEs.
//!
//! It answers as [`super::BoltGraph`] does for the same data, and the conformance tests run
//! one scenario on both: labels behind a namespace, properties merged as Cypher's `SET n +=`
//! merges them (a `null` removes one), bare target nodes created for edges, the tenant guard
//! on every node of a path, neighbours ordered by depth, label and id, and the depth cap
//! [`MAX_DEPTH`]. Labels, relation names and ids are bound parameters like every value.
//!
//! Where several shortest paths exist, Bolt servers return any one of them; this store
//! returns the one whose nodes, read from the end backwards, have the smallest labels and
//! ids.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::{DatabaseConnection, Value as SqlValue};
use serde_json::{Map, Value as Json};

use super::{Direction, GraphNode, GraphPath, GraphRelation, GraphStore, MAX_DEPTH, Neighbor, NeighborQuery, PathQuery, StoredNode};
use crate::error::{Result, StoreKind};
use crate::store::sqlite::SqliteFile;

// The statements below spell these two names out, so that each reads as plain SQL.

/// The table of nodes: `(label, id)`, the tenant (copied from the properties, for the guard)
/// and the properties as a JSON object.
pub const NODES_TABLE: &str = "dataflow_graph_nodes";
/// The table of edges: `(src_label, src_id, rel, dst_label, dst_id)`.
pub const EDGES_TABLE: &str = "dataflow_graph_edges";

const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS dataflow_graph_nodes (label TEXT NOT NULL, id INTEGER NOT NULL, tenant_id TEXT NULL, \
     props TEXT NOT NULL, PRIMARY KEY (label, id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS dataflow_graph_edges (src_label TEXT NOT NULL, src_id INTEGER NOT NULL, rel TEXT NOT NULL, \
     dst_label TEXT NOT NULL, dst_id INTEGER NOT NULL, PRIMARY KEY (src_label, src_id, rel, dst_label, dst_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS dataflow_graph_edges_dst ON dataflow_graph_edges (dst_label, dst_id, rel)",
];

/// The graph in an SQLite file; labels are stored as `{namespace}{Model}`.
pub struct EmbeddedGraph {
    file: SqliteFile,
    namespace: String,
}

impl EmbeddedGraph {
    /// The graph kept in the SQLite database `db` (creating its two tables when missing),
    /// with labels behind `namespace` (`[A-Za-z0-9_]*`, as for the Bolt backend).
    pub async fn open(db: DatabaseConnection, namespace: &str) -> Result<Self> {
        super::check_namespace(namespace)?;
        let file = SqliteFile::new(db, StoreKind::Graph)?;
        for statement in SCHEMA {
            file.execute(file.pool(), "creating the graph tables", statement, vec![]).await?;
        }
        Ok(EmbeddedGraph {
            file,
            namespace: namespace.to_owned(),
        })
    }

    /// `{namespace}{label}`, as stored.
    fn label(&self, label: &str) -> String {
        format!("{}{}", self.namespace, label)
    }

    /// A label as stored, without the namespace; `None` for labels outside it.
    fn strip<'a>(&self, stored: &'a str) -> Option<&'a str> {
        stored.strip_prefix(self.namespace.as_str())
    }

    /// Smallest hop count from the start node to every node reachable within `depth` along
    /// `direction` (the start node itself at 0), visiting only nodes the tenant may see.
    /// Empty when the start node does not exist or is outside the tenant's scope.
    async fn distances(
        &self,
        start: (&str, i64),
        relation: Option<&str>,
        direction: Direction,
        depth: u32,
        tenant: Option<&str>,
        action: &str,
    ) -> Result<Vec<(String, i64, u32)>> {
        // ?1 start label, ?2 start id, ?3 tenant, ?4 relation (NULL: any), ?5 depth.
        let out_step = "SELECT e.dst_label, e.dst_id, w.depth + 1 FROM walk w \
             JOIN dataflow_graph_edges e ON e.src_label = w.label AND e.src_id = w.id AND (?4 IS NULL OR e.rel = ?4) \
             JOIN dataflow_graph_nodes n ON n.label = e.dst_label AND n.id = e.dst_id \
             WHERE w.depth < ?5 AND (n.tenant_id IS NULL OR n.tenant_id = ?3)";
        let in_step = "SELECT e.src_label, e.src_id, w.depth + 1 FROM walk w \
             JOIN dataflow_graph_edges e ON e.dst_label = w.label AND e.dst_id = w.id AND (?4 IS NULL OR e.rel = ?4) \
             JOIN dataflow_graph_nodes n ON n.label = e.src_label AND n.id = e.src_id \
             WHERE w.depth < ?5 AND (n.tenant_id IS NULL OR n.tenant_id = ?3)";
        let steps = match direction {
            Direction::Out => out_step.to_owned(),
            Direction::In => in_step.to_owned(),
            Direction::Both => format!("{out_step} UNION {in_step}"),
        };
        // UNION (not UNION ALL) keeps each (node, depth) once, so the walk is bounded by
        // nodes × depth however many paths lead to a node.
        let sql = format!(
            "WITH RECURSIVE walk(label, id, depth) AS ( \
               SELECT label, id, 0 FROM dataflow_graph_nodes \
               WHERE label = ?1 AND id = ?2 AND (tenant_id IS NULL OR tenant_id = ?3) \
               UNION {steps}) \
             SELECT label, id, MIN(depth) AS depth FROM walk GROUP BY label, id"
        );
        let values = vec![
            SqlValue::from(self.label(start.0)),
            start.1.into(),
            SqlValue::String(tenant.map(str::to_owned)),
            SqlValue::String(relation.map(str::to_owned)),
            i64::from(depth.clamp(1, MAX_DEPTH)).into(),
        ];
        let rows = self.file.query(self.file.pool(), action, &sql, values).await?;
        rows.iter()
            .map(|row| {
                let label: String = row.try_get("", "label").map_err(|e| self.file.error(action, e))?;
                let id: i64 = row.try_get("", "id").map_err(|e| self.file.error(action, e))?;
                let depth: i64 = row.try_get("", "depth").map_err(|e| self.file.error(action, e))?;
                Ok((label, id, depth as u32))
            })
            .collect()
    }

    /// The edges touching a node either way: `(relation, other end's label, its id)`.
    async fn adjacent(&self, label: &str, id: i64, relation: Option<&str>, action: &str) -> Result<Vec<(String, String, i64)>> {
        let sql = "SELECT rel, dst_label AS label, dst_id AS id FROM dataflow_graph_edges \
                   WHERE src_label = ?1 AND src_id = ?2 AND (?3 IS NULL OR rel = ?3) \
                   UNION ALL SELECT rel, src_label, src_id FROM dataflow_graph_edges \
                   WHERE dst_label = ?1 AND dst_id = ?2 AND (?3 IS NULL OR rel = ?3)";
        let values = vec![
            SqlValue::from(label.to_owned()),
            id.into(),
            SqlValue::String(relation.map(str::to_owned)),
        ];
        let rows = self.file.query(self.file.pool(), action, sql, values).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("", "rel").map_err(|e| self.file.error(action, e))?,
                    row.try_get("", "label").map_err(|e| self.file.error(action, e))?,
                    row.try_get("", "id").map_err(|e| self.file.error(action, e))?,
                ))
            })
            .collect()
    }
}

#[async_trait]
impl GraphStore for EmbeddedGraph {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn prepare(&self, _labels: &[&'static str]) -> Result<()> {
        // The tables and their indexes serve every label; `open` created them.
        Ok(())
    }

    async fn upsert_nodes(&self, label: &'static str, relations: &[GraphRelation], nodes: &[GraphNode]) -> Result<()> {
        let action = "writing nodes";
        let stored_label = self.label(label);
        let txn = self.file.begin(action).await?;
        for node in nodes {
            let mut props = node.props.clone();
            props.insert("id".into(), Json::from(node.id));
            let props = Json::Object(props).to_string();
            // json_patch merges as `SET n += props` does: given keys replace, nulls remove. A
            // node older than the stored one (a lower version) changes nothing, edges included,
            // as on the Bolt server.
            let written = self
                .file
                .execute(
                    &txn,
                    action,
                    "INSERT INTO dataflow_graph_nodes (label, id, tenant_id, props) \
                     VALUES (?1, ?2, json_extract(json_patch('{}', ?3), '$.tenant_id'), json_patch('{}', ?3)) \
                     ON CONFLICT (label, id) DO UPDATE SET props = json_patch(props, ?3), \
                     tenant_id = json_extract(json_patch(props, ?3), '$.tenant_id') \
                     WHERE json_extract(props, '$.version') IS NULL OR json_extract(?3, '$.version') IS NULL \
                     OR json_extract(props, '$.version') <= json_extract(?3, '$.version')",
                    vec![stored_label.clone().into(), node.id.into(), props.into()],
                )
                .await?;
            if written == 0 {
                continue;
            }
            let tenant = node.props.get("tenant_id").and_then(Json::as_str).map(str::to_owned);
            for relation in relations {
                let target = node.edges.iter().find(|(name, _)| *name == relation.name).and_then(|(_, t)| *t);
                let target_label = self.label(relation.target);
                // Drop the relation's edges that point anywhere but the target.
                self.file
                    .execute(
                        &txn,
                        action,
                        "DELETE FROM dataflow_graph_edges WHERE src_label = ?1 AND src_id = ?2 AND rel = ?3 \
                         AND (?5 IS NULL OR dst_label <> ?4 OR dst_id <> ?5)",
                        vec![
                            stored_label.clone().into(),
                            node.id.into(),
                            relation.name.into(),
                            target_label.clone().into(),
                            target.into(),
                        ],
                    )
                    .await?;
                let Some(target) = target else { continue };
                let target_tenant = if relation.target_tenant { tenant.clone() } else { None };
                let bare = match &target_tenant {
                    Some(t) => serde_json::json!({"id": target, "tenant_id": t}),
                    None => serde_json::json!({"id": target}),
                };
                self.file
                    .execute(
                        &txn,
                        action,
                        "INSERT INTO dataflow_graph_nodes (label, id, tenant_id, props) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (label, id) DO NOTHING",
                        vec![
                            target_label.clone().into(),
                            target.into(),
                            target_tenant.into(),
                            bare.to_string().into(),
                        ],
                    )
                    .await?;
                self.file
                    .execute(
                        &txn,
                        action,
                        "INSERT INTO dataflow_graph_edges (src_label, src_id, rel, dst_label, dst_id) \
                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                        vec![
                            stored_label.clone().into(),
                            node.id.into(),
                            relation.name.into(),
                            target_label.into(),
                            target.into(),
                        ],
                    )
                    .await?;
            }
        }
        self.file.commit(txn, action).await
    }

    async fn delete_nodes(&self, label: &'static str, ids: &[i64]) -> Result<()> {
        let action = "deleting nodes";
        let stored_label = self.label(label);
        let txn = self.file.begin(action).await?;
        for &id in ids {
            let values = || vec![SqlValue::from(stored_label.clone()), id.into()];
            self.file
                .execute(
                    &txn,
                    action,
                    "DELETE FROM dataflow_graph_edges WHERE (src_label = ?1 AND src_id = ?2) OR (dst_label = ?1 AND dst_id = ?2)",
                    values(),
                )
                .await?;
            self.file
                .execute(
                    &txn,
                    action,
                    "DELETE FROM dataflow_graph_nodes WHERE label = ?1 AND id = ?2",
                    values(),
                )
                .await?;
        }
        self.file.commit(txn, action).await
    }

    async fn neighbors(&self, q: &NeighborQuery<'_>) -> Result<Vec<Neighbor>> {
        let start = self.label(q.label);
        let mut found: Vec<Neighbor> = self
            .distances((q.label, q.id), q.relation, q.direction, q.depth, q.tenant, "finding neighbours")
            .await?
            .into_iter()
            .filter(|(label, id, _)| !(*label == start && *id == q.id))
            .filter_map(|(label, id, depth)| {
                Some(Neighbor {
                    label: self.strip(&label)?.to_owned(),
                    id,
                    depth,
                })
            })
            .collect();
        found.sort_by(|a, b| (a.depth, &a.label, a.id).cmp(&(b.depth, &b.label, b.id)));
        found.truncate(q.limit);
        Ok(found)
    }

    async fn shortest_path(&self, q: &PathQuery<'_>) -> Result<Option<GraphPath>> {
        let action = "finding a path";
        let (from, to) = (self.label(q.from.0), self.label(q.to.0));
        if from == to && q.from.1 == q.to.1 {
            return Ok(None);
        }
        let distance: HashMap<(String, i64), u32> = self
            .distances((q.from.0, q.from.1), q.relation, Direction::Both, q.max_depth, q.tenant, action)
            .await?
            .into_iter()
            .map(|(label, id, depth)| ((label, id), depth))
            .collect();
        let Some(&length) = distance.get(&(to.clone(), q.to.1)) else {
            return Ok(None);
        };
        // Walk back from the end: each step to a neighbour one hop nearer the start.
        let mut nodes = vec![(to, q.to.1)];
        let mut relations = Vec::with_capacity(length as usize);
        for remaining in (0..length).rev() {
            let (label, id) = nodes.last().expect("the path has its end node");
            let step = self
                .adjacent(label, *id, q.relation, action)
                .await?
                .into_iter()
                .filter(|(_, l, i)| distance.get(&(l.clone(), *i)) == Some(&remaining))
                .min_by(|a, b| (&a.1, a.2, &a.0).cmp(&(&b.1, b.2, &b.0)))
                .ok_or_else(|| self.file.error(action, "the graph changed while a path was being read".to_owned()))?;
            relations.push(step.0);
            nodes.push((step.1, step.2));
        }
        nodes.reverse();
        relations.reverse();
        let nodes = nodes
            .into_iter()
            .map(|(label, id)| (self.strip(&label).unwrap_or(&label).to_owned(), id))
            .collect();
        Ok(Some(GraphPath { nodes, relations }))
    }

    async fn node(&self, label: &'static str, id: i64) -> Result<Option<StoredNode>> {
        let action = "reading a node";
        let stored_label = self.label(label);
        let rows = self
            .file
            .query(
                self.file.pool(),
                action,
                "SELECT props FROM dataflow_graph_nodes WHERE label = ?1 AND id = ?2",
                vec![stored_label.clone().into(), id.into()],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let text: String = row.try_get("", "props").map_err(|e| self.file.error(action, e))?;
        let props: Map<String, Json> =
            serde_json::from_str(&text).map_err(|e| self.file.error(action, format!("unreadable properties: {e}")))?;
        let rows = self
            .file
            .query(
                self.file.pool(),
                action,
                "SELECT rel, dst_label, dst_id FROM dataflow_graph_edges WHERE src_label = ?1 AND src_id = ?2",
                vec![stored_label.into(), id.into()],
            )
            .await?;
        let mut edges = Vec::with_capacity(rows.len());
        for row in rows {
            let rel: String = row.try_get("", "rel").map_err(|e| self.file.error(action, e))?;
            let target: String = row.try_get("", "dst_label").map_err(|e| self.file.error(action, e))?;
            let target_id: i64 = row.try_get("", "dst_id").map_err(|e| self.file.error(action, e))?;
            edges.push((rel, self.strip(&target).unwrap_or(&target).to_owned(), target_id));
        }
        edges.sort();
        Ok(Some(StoredNode { props, edges }))
    }

    async fn count(&self, label: &'static str) -> Result<u64> {
        let action = "counting nodes";
        let rows = self
            .file
            .query(
                self.file.pool(),
                action,
                "SELECT COUNT(*) AS n FROM dataflow_graph_nodes WHERE label = ?1",
                vec![self.label(label).into()],
            )
            .await?;
        let n: i64 = match rows.first() {
            Some(row) => row.try_get("", "n").map_err(|e| self.file.error(action, e))?,
            None => 0,
        };
        Ok(n as u64)
    }

    async fn ping(&self) -> Result<Duration> {
        self.file.ping().await
    }
}
