//! A Bolt server (Neo4j 4.4/5.x, or another server that speaks Bolt 4 and openCypher) through
//! `neo4rs`.
//!
//! Every value travels as a query parameter. Labels and relation types come from model
//! metadata (typed `&'static str`) behind a namespace prefix checked at construction, and are
//! backtick-quoted. The depth of a variable-length pattern cannot be a Cypher parameter; it is
//! written from a `u32` checked against [`MAX_DEPTH`].
//!
//! # Where servers differ
//!
//! The Cypher written here is one subset that Neo4j and ArcadeDB (26.x, the server the tests
//! run) both accept: `MERGE`, `UNWIND`, `FOREACH`, `OPTIONAL MATCH`, variable-length patterns,
//! `shortestPath`, list comprehensions and `CREATE INDEX IF NOT EXISTS`. They differ in how
//! concurrent writers meet:
//!
//! - **ArcadeDB** is optimistic: two transactions that add edges to the same node (two products
//!   created at once in one category) make one of them fail with
//!   `Neo.TransientError.Transaction.DeadlockDetected` ("modified by a concurrent
//!   transaction"). Neo4j takes locks and waits instead. Writes here are therefore retried on
//!   transient errors ([`WRITE_ATTEMPTS`]), which both servers mark as safe to retry; the test
//!   `concurrent_creates_in_one_category_all_reach_the_graph` shows it.
//! - **ArcadeDB** slows down on very large `UNWIND` batches (1,000 rows of `MERGE` took 6×
//!   longer per row than 100 rows here), so batches are kept at [`BATCH_ROWS`].
//! - **ArcadeDB** does not make `MERGE` of a node atomic by itself: two transactions that
//!   `MERGE` the same new node at once both create it (300 nodes written by two clients at once
//!   gave 552 nodes, and each copy its own edges). Every label therefore has a uniqueness
//!   constraint on `id` ([`GraphStore::prepare`]); the transaction that commits second then fails
//!   with `Neo.ClientError.Schema.ConstraintValidationFailed`, and node writes run again after
//!   it, when their `MERGE` finds the node. Neo4j locks the
//!   constraint's index entry during `MERGE`, so its writers wait instead. A graph written
//!   before the constraint existed may hold such copies: `prepare` keeps the copy of the
//!   highest version of each and removes the others (with a warning), then adds the
//!   constraint. Neo4j 5 refuses a constraint where an index on the same property exists (the
//!   index that earlier versions of dataflow created): drop that index by hand there.
//! - **ArcadeDB** rejects every login while it starts (its users are not loaded yet) with the
//!   answer it gives a wrong password (`Neo.ClientError.Security.Unauthorized`, "Authentication
//!   failed"). Rejected credentials are therefore transient for [`AUTH_GRACE`] after the first
//!   rejection since the server last accepted them, and final after that.
//!
//! # Shared writes
//!
//! Concurrent node writes of one label (each write's own projection, a node or a few) share
//! one `UNWIND` statement (`coalesce`): while one is in flight, the next ones queue and leave
//! together when it returns. Per row, one statement then carries one copy, the one of the
//! highest version. One statement of a label at a time also means that writers of this process
//! no longer meet on a category node (the optimistic conflicts above).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use neo4rs::{BoltType, ConfigBuilder, Graph, Query};
use serde_json::{Map, Value as Json};

use super::{Direction, GraphNode, GraphPath, GraphRelation, GraphStore, MAX_DEPTH, Neighbor, NeighborQuery, PathQuery, StoredNode};
use crate::error::{Error, Result, StoreKind};
use crate::secrets::redact_url;
use crate::store::coalesce::Coalescer;
use crate::store::vector::VERSION_KEY;

/// Rows per `UNWIND` statement.
pub const BATCH_ROWS: usize = 200;
/// Node writes (calls of fewer than [`BATCH_ROWS`] nodes) one shared statement carries at most.
pub const MAX_WRITES_PER_STATEMENT: usize = 64;
/// Attempts of one write when the server reports a transient error.
pub const WRITE_ATTEMPTS: u32 = 10;
/// Time limit of a schema change (an index), at least.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may reject the credentials, from the first rejection since it last
/// accepted them, before that is final: until then a rejection is transient (a server that is
/// starting rejects every login, see the module's notes), after it permanent (a wrong user or
/// password). A wrong password thus fails for good within this long.
pub const AUTH_GRACE: Duration = Duration::from_secs(10);

/// Which failures a statement runs again after (at most [`WRITE_ATTEMPTS`] attempts in all).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// None: reads, whose callers decide.
    Never,
    /// Conflicts with concurrent transactions the server reports as transient.
    Conflicts,
    /// Conflicts, and a node created by another writer first (node writes: their `MERGE`
    /// finds it when run again).
    ConflictsAndTakenIds,
}

/// A Bolt graph server; labels are written `{namespace}{Model}`.
pub struct BoltGraph {
    graph: Graph,
    namespace: String,
    timeout: Duration,
    /// The user the server is asked to accept, named in errors (the password never is).
    user: String,
    /// When the server began rejecting the credentials, since it last accepted them.
    rejected_since: Mutex<Option<Instant>>,
    /// Concurrent node writes sharing statements, by label.
    writes: Coalescer<&'static str, Vec<GraphNode>, ()>,
}

/// The nodes of several writes of one label as one list: a node written twice keeps the copy
/// of the highest version (the later one on a tie), at the place of its first copy. Which copy
/// is current does not rest on this: each writer checks afterwards that its row did not move
/// on, and re-applies it if it did.
fn merge_writes(batch: Vec<Vec<GraphNode>>) -> Vec<GraphNode> {
    let version = |n: &GraphNode| n.props.get(VERSION_KEY).and_then(Json::as_i64).unwrap_or(i64::MIN);
    let mut merged: Vec<GraphNode> = Vec::new();
    let mut at: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for node in batch.into_iter().flatten() {
        match at.get(&node.id) {
            Some(&i) => {
                if version(&node) >= version(&merged[i]) {
                    merged[i] = node;
                }
            }
            None => {
                at.insert(node.id, merged.len());
                merged.push(node);
            }
        }
    }
    merged
}

impl BoltGraph {
    /// A client for the Bolt server at `uri` (`bolt://host:port` or `neo4j://...`). Connections
    /// are opened on first use, so a server that is down now does not stop the application;
    /// every call gives up after `timeout`. The namespace must be `[A-Za-z0-9_]*` (empty is
    /// fine) and prefixes every label, so several applications or tests can share a database.
    pub async fn connect(
        uri: &str,
        user: &str,
        password: &str,
        database: Option<&str>,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self> {
        if !(uri.starts_with("bolt://") || uri.starts_with("neo4j://") || uri.starts_with("bolt+s://") || uri.starts_with("neo4j+s://")) {
            return Err(Error::Config(format!(
                "graph_url must start with bolt:// or neo4j://, got '{}'",
                redact_url(uri)
            )));
        }
        super::check_namespace(namespace)?;
        let mut config = ConfigBuilder::default()
            .uri(uri)
            .user(user)
            .password(password)
            .max_connections(16)
            .fetch_size(1000);
        if let Some(db) = database {
            config = config.db(db);
        }
        let config = config
            .build()
            .map_err(|e| Error::Config(format!("graph server '{}': {e}", redact_url(uri))).without_password_of(uri))?;
        let graph = Graph::connect(config)
            .await
            .map_err(|e| Error::Config(format!("graph server '{}': {e}", redact_url(uri))).without_password_of(uri))?;
        Ok(BoltGraph {
            graph,
            namespace: namespace.to_owned(),
            timeout,
            user: user.to_owned(),
            rejected_since: Mutex::new(None),
            // A write queued behind statements that are not answered gives up after the
            // timeout its own statement would have: its outbox record stays for sync.
            writes: Coalescer::new(StoreKind::Graph, MAX_WRITES_PER_STATEMENT).with_wait_limit(timeout, |limit| {
                graph_error(
                    "writing nodes",
                    format!("the writes ahead of this one in the shared queue were not answered within {limit:?}"),
                    true,
                )
            }),
        })
    }

    /// Node writes asked and statements sent for the shared ones so far (writes of fewer
    /// than [`BATCH_ROWS`] nodes share statements when they arrive together).
    pub fn write_counts(&self) -> (u64, u64) {
        self.writes.counts()
    }

    /// `` `{namespace}{label}` ``.
    fn label(&self, label: &str) -> String {
        format!("`{}{}`", self.namespace, label.replace('`', ""))
    }

    /// A label as stored, without the namespace; `None` for labels outside it.
    fn strip<'a>(&self, stored: &'a str) -> Option<&'a str> {
        stored.strip_prefix(self.namespace.as_str())
    }

    /// Runs `query` in its own transaction and returns every row; runs it again after the
    /// failures `retry` names, up to [`WRITE_ATTEMPTS`] attempts.
    async fn run(&self, action: &str, query: Query, retry: Retry) -> Result<Vec<neo4rs::Row>> {
        self.run_within(action, query, retry, self.timeout).await
    }

    /// [`BoltGraph::run`] with a time limit of its own.
    async fn run_within(&self, action: &str, query: Query, retry: Retry, timeout: Duration) -> Result<Vec<neo4rs::Row>> {
        let attempts = if retry == Retry::Never { 1 } else { WRITE_ATTEMPTS };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (graph, query) = (self.graph.clone(), query.clone());
            // The exchange runs in a task of its own, and a timeout leaves it running to its
            // end instead of dropping it: a transaction dropped halfway returns its pooled
            // connection out of step with the server, and the next query on that connection
            // reads this one's replies as its own (a delete could then report success without
            // having run). Whatever the late exchange writes, its outbox record stays pending
            // (the caller was told it failed), so `sync` applies the row's state again.
            let mut exchange = tokio::spawn(async move {
                let mut txn = graph.start_txn().await?;
                let mut stream = txn.execute(query).await?;
                let mut rows = Vec::new();
                while let Some(row) = stream.next(txn.handle()).await? {
                    rows.push(row);
                }
                txn.commit().await?;
                Ok::<_, neo4rs::Error>(rows)
            });
            let error = match tokio::time::timeout(timeout, &mut exchange).await {
                Ok(Ok(Ok(rows))) => {
                    *self.rejected_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    return Ok(rows);
                }
                Ok(Ok(Err(e))) if is_rejected_login(&e) => return Err(self.rejected(action, &e)),
                Ok(Ok(Err(e))) => e,
                Ok(Err(e)) => return Err(graph_error(action, format!("the query's task ended: {e}"), true)),
                Err(_) => return Err(graph_error(action, format!("no answer within {timeout:?}"), true)),
            };
            let transient = is_transient(&error);
            // Retry what the server reported as a conflict (and, for node writes, a node another
            // writer created first); a server that cannot be reached fails at once, and the
            // outbox keeps the write for later.
            let again = is_conflict(&error) || (retry == Retry::ConflictsAndTakenIds && is_taken_id(&error));
            if again && attempt < attempts {
                // Exponential backoff with full jitter, so writers that met on one node
                // do not meet again: up to 5, 10, 20, ... ms.
                let ceiling = 5u64 << (attempt - 1).min(7);
                tokio::time::sleep(Duration::from_millis(1 + random_below(ceiling))).await;
                continue;
            }
            return Err(graph_error(action, error.to_string(), transient));
        }
    }

    /// The error for credentials the server rejected with `e`: transient within [`AUTH_GRACE`]
    /// of the first rejection since it last accepted them, permanent after.
    fn rejected(&self, action: &str, e: &neo4rs::Error) -> Error {
        let rejected_for = {
            let mut since = self.rejected_since.lock().unwrap_or_else(|e| e.into_inner());
            since.get_or_insert_with(Instant::now).elapsed()
        };
        let answer = e.to_string();
        if rejected_for < AUTH_GRACE {
            graph_error(
                action,
                format!(
                    "the server rejected the login of user '{}' ({answer}); a server that is starting does that, so this counts as transient until it has done so for {AUTH_GRACE:?}",
                    self.user
                ),
                true,
            )
        } else {
            graph_error(
                action,
                format!(
                    "authentication failed for user '{}': the server has rejected its login for {:.0?} ({answer}); check the user and password",
                    self.user, rejected_for
                ),
                false,
            )
        }
    }

    /// Writes `nodes` of `label` in statements of at most [`BATCH_ROWS`] rows.
    async fn write_nodes(&self, label: &'static str, relations: &[GraphRelation], nodes: &[GraphNode]) -> Result<()> {
        // One statement per batch: set the properties, drop edges that point elsewhere, then
        // MERGE each relation's edge (FOREACH over a zero- or one-element list). A row older
        // than the node (a lower version) changes nothing: a write whose caller timed out can
        // still reach the server after a newer one (its exchange is left to finish, see
        // `run`), and must not undo it.
        let mut text = format!(
            "UNWIND $rows AS row MERGE (n:{} {{id: row.id}}) WITH n, row \
             WHERE n.{VERSION_KEY} IS NULL OR row.props.{VERSION_KEY} IS NULL OR n.{VERSION_KEY} <= row.props.{VERSION_KEY} \
             SET n += row.props WITH n, row",
            self.label(label)
        );
        if !relations.is_empty() {
            text.push_str(
                " OPTIONAL MATCH (n)-[old]->(t) WHERE type(old) IN $relations \
                 AND (row.edges[type(old)] IS NULL OR t.id <> row.edges[type(old)]) \
                 DELETE old WITH DISTINCT n, row",
            );
            for r in relations {
                let name = r.name.replace('`', "");
                let on_create = if r.target_tenant {
                    " ON CREATE SET t.tenant_id = row.props.tenant_id"
                } else {
                    ""
                };
                text.push_str(&format!(
                    " FOREACH (target IN CASE WHEN row.edges.`{name}` IS NULL THEN [] ELSE [row.edges.`{name}`] END | \
                     MERGE (t:{target} {{id: target}}){on_create} MERGE (n)-[:`{name}`]->(t))",
                    target = self.label(r.target),
                ));
            }
        }
        text.push_str(" RETURN count(n) AS written");
        let relation_names: Vec<BoltType> = relations.iter().map(|r| BoltType::from(r.name)).collect();
        for chunk in nodes.chunks(BATCH_ROWS) {
            let rows: Vec<BoltType> = chunk
                .iter()
                .map(|node| {
                    let mut row = Map::new();
                    row.insert("id".into(), Json::from(node.id));
                    row.insert("props".into(), Json::Object(node.props.clone()));
                    let edges: Map<String, Json> = node
                        .edges
                        .iter()
                        .map(|(rel, target)| ((*rel).to_owned(), target.map(Json::from).unwrap_or(Json::Null)))
                        .collect();
                    row.insert("edges".into(), Json::Object(edges));
                    to_bolt(&Json::Object(row))
                })
                .collect();
            let query = Query::new(text.clone())
                .param("rows", rows)
                .param("relations", relation_names.clone());
            self.run("writing nodes", query, Retry::ConflictsAndTakenIds).await?;
        }
        Ok(())
    }

    /// `(x.tenant_id IS NULL OR x.tenant_id = $tenant)` for every node on path `p`.
    fn tenant_guard(tenant: Option<&str>, nodes: &str) -> String {
        match tenant {
            Some(_) => format!("all(x IN {nodes} WHERE x.tenant_id IS NULL OR x.tenant_id = $tenant)"),
            None => format!("all(x IN {nodes} WHERE x.tenant_id IS NULL)"),
        }
    }

    fn pattern(relation: Option<&'static str>, direction: Direction, min: u32, max: u32) -> String {
        let rel = relation.map(|r| format!(":`{}`", r.replace('`', ""))).unwrap_or_default();
        let hops = format!("*{min}..{}", max.clamp(1, MAX_DEPTH));
        match direction {
            Direction::Out => format!("-[{rel}{hops}]->"),
            Direction::In => format!("<-[{rel}{hops}]-"),
            Direction::Both => format!("-[{rel}{hops}]-"),
        }
    }
}

#[async_trait]
impl GraphStore for BoltGraph {
    fn backend(&self) -> &'static str {
        "bolt"
    }

    async fn prepare(&self, labels: &[&'static str]) -> Result<()> {
        // Schema changes are not bound by the time a projection may take: a server that just
        // started can need seconds for one.
        let timeout = self.timeout.max(SCHEMA_TIMEOUT);
        for label in labels {
            let stored = self.label(label);
            let text = format!("CREATE CONSTRAINT IF NOT EXISTS FOR (n:{stored}) REQUIRE n.id IS UNIQUE");
            let action = format!("making the ids of {stored} nodes unique");
            match self.run_within(&action, Query::new(text.clone()), Retry::Conflicts, timeout).await {
                Ok(_) => continue,
                Err(e) if e.to_string().contains(TAKEN_ID) => {}
                Err(e) => return Err(e),
            }
            // Nodes written before the constraint existed include copies of one id (see the
            // module's notes): keep the one of the highest version.
            let dedupe = format!(
                "MATCH (n:{stored}) WITH n ORDER BY n.{VERSION_KEY} DESC \
                 WITH n.id AS id, collect(n) AS copies WHERE size(copies) > 1 \
                 UNWIND tail(copies) AS extra DETACH DELETE extra RETURN count(*) AS removed"
            );
            let rows = self
                .run_within(
                    &format!("removing copies of {stored} nodes"),
                    Query::new(dedupe),
                    Retry::Conflicts,
                    timeout,
                )
                .await?;
            let removed: i64 = rows.first().and_then(|r| r.get("removed").ok()).unwrap_or(0);
            tracing::warn!(
                label = %stored,
                removed,
                "the graph held several nodes of one id (written at once before ids were unique): kept the copy of the highest version of each"
            );
            self.run_within(&action, Query::new(text), Retry::Conflicts, timeout).await?;
        }
        Ok(())
    }

    async fn upsert_nodes(&self, label: &'static str, relations: &[GraphRelation], nodes: &[GraphNode]) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        if nodes.len() >= BATCH_ROWS {
            return self.write_nodes(label, relations, nodes).await;
        }
        // Small writes (a write's own projection) share statements with concurrent ones.
        self.writes
            .run(label, nodes.to_vec(), |batch| async move {
                let n = batch.len();
                self.write_nodes(label, relations, &merge_writes(batch)).await?;
                Ok(vec![(); n])
            })
            .await
    }

    async fn delete_nodes(&self, label: &'static str, ids: &[i64]) -> Result<()> {
        let text = format!("UNWIND $ids AS id MATCH (n:{} {{id: id}}) DETACH DELETE n", self.label(label));
        for chunk in ids.chunks(BATCH_ROWS) {
            let query = Query::new(text.clone()).param("ids", chunk.to_vec());
            self.run("deleting nodes", query, Retry::Conflicts).await?;
        }
        Ok(())
    }

    async fn neighbors(&self, q: &NeighborQuery<'_>) -> Result<Vec<Neighbor>> {
        let text = format!(
            "MATCH (a:{label} {{id: $id}}) WHERE {start} \
             MATCH p = (a){pattern}(b) WHERE b <> a AND {path} \
             RETURN labels(b)[0] AS label, b.id AS id, min(length(p)) AS depth \
             ORDER BY depth, label, id LIMIT $limit",
            label = self.label(q.label),
            start = Self::tenant_guard(q.tenant, "[a]"),
            pattern = Self::pattern(q.relation, q.direction, 1, q.depth),
            path = Self::tenant_guard(q.tenant, "nodes(p)"),
        );
        let query = Query::new(text)
            .param("id", q.id)
            .param("tenant", tenant_param(q.tenant))
            .param("limit", q.limit as i64);
        let rows = self.run("finding neighbours", query, Retry::Never).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let stored: String = row.get("label").map_err(|e| decode_error("finding neighbours", e))?;
            let Some(label) = self.strip(&stored) else { continue };
            out.push(Neighbor {
                label: label.to_owned(),
                id: row.get("id").map_err(|e| decode_error("finding neighbours", e))?,
                depth: row.get::<i64>("depth").map_err(|e| decode_error("finding neighbours", e))? as u32,
            });
        }
        Ok(out)
    }

    async fn shortest_path(&self, q: &PathQuery<'_>) -> Result<Option<GraphPath>> {
        let rel = q.relation.map(|r| format!(":`{}`", r.replace('`', ""))).unwrap_or_default();
        let text = format!(
            "MATCH (a:{from} {{id: $from}}), (b:{to} {{id: $to}}) \
             MATCH p = shortestPath((a)-[{rel}*..{depth}]-(b)) WHERE {guard} \
             RETURN [x IN nodes(p) | labels(x)[0]] AS labels, [x IN nodes(p) | x.id] AS ids, \
             [r IN relationships(p) | type(r)] AS relations LIMIT 1",
            from = self.label(q.from.0),
            to = self.label(q.to.0),
            depth = q.max_depth.clamp(1, MAX_DEPTH),
            guard = Self::tenant_guard(q.tenant, "nodes(p)"),
        );
        let query = Query::new(text)
            .param("from", q.from.1)
            .param("to", q.to.1)
            .param("tenant", tenant_param(q.tenant));
        let rows = self.run("finding a path", query, Retry::Never).await?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let labels: Vec<String> = row.get("labels").map_err(|e| decode_error("finding a path", e))?;
        let ids: Vec<i64> = row.get("ids").map_err(|e| decode_error("finding a path", e))?;
        let relations: Vec<String> = row.get("relations").map_err(|e| decode_error("finding a path", e))?;
        let nodes = labels
            .iter()
            .zip(ids)
            .map(|(l, id)| (self.strip(l).unwrap_or(l).to_owned(), id))
            .collect();
        Ok(Some(GraphPath { nodes, relations }))
    }

    async fn node(&self, label: &'static str, id: i64) -> Result<Option<StoredNode>> {
        let text = format!(
            "MATCH (n:{} {{id: $id}}) OPTIONAL MATCH (n)-[r]->(t) \
             RETURN properties(n) AS props, collect([type(r), labels(t)[0], t.id]) AS edges",
            self.label(label)
        );
        let rows = self.run("reading a node", Query::new(text).param("id", id), Retry::Never).await?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let props: Map<String, Json> = row.get("props").map_err(|e| decode_error("reading a node", e))?;
        let raw: Vec<Vec<Json>> = row.get("edges").map_err(|e| decode_error("reading a node", e))?;
        let mut edges: Vec<(String, String, i64)> = raw
            .into_iter()
            .filter_map(|e| {
                let rel = e.first()?.as_str()?.to_owned();
                let target = e.get(1)?.as_str()?;
                let target = self.strip(target).unwrap_or(target).to_owned();
                Some((rel, target, e.get(2)?.as_i64()?))
            })
            .collect();
        edges.sort();
        Ok(Some(StoredNode { props, edges }))
    }

    async fn count(&self, label: &'static str) -> Result<u64> {
        let text = format!("MATCH (n:{}) RETURN count(n) AS n", self.label(label));
        let rows = self.run("counting nodes", Query::new(text), Retry::Never).await?;
        let n: i64 = match rows.first() {
            Some(row) => row.get("n").map_err(|e| decode_error("counting nodes", e))?,
            None => 0,
        };
        Ok(n as u64)
    }

    async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.run("pinging", Query::new("RETURN 1 AS one".into()), Retry::Never).await?;
        Ok(start.elapsed())
    }
}

fn tenant_param(tenant: Option<&str>) -> BoltType {
    match tenant {
        Some(t) => BoltType::from(t),
        None => BoltType::Null(neo4rs::BoltNull),
    }
}

/// A JSON value as a Bolt parameter.
pub fn to_bolt(value: &Json) -> BoltType {
    match value {
        Json::Null => BoltType::Null(neo4rs::BoltNull),
        Json::Bool(b) => BoltType::from(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => BoltType::from(i),
            None => BoltType::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => BoltType::from(s.as_str()),
        Json::Array(items) => BoltType::List(neo4rs::BoltList {
            value: items.iter().map(to_bolt).collect(),
        }),
        Json::Object(map) => BoltType::Map(neo4rs::BoltMap {
            value: map.iter().map(|(k, v)| (neo4rs::BoltString::new(k), to_bolt(v))).collect(),
        }),
    }
}

/// Lost connections and errors the server classes as transient: a later call may succeed.
fn is_transient(e: &neo4rs::Error) -> bool {
    matches!(e, neo4rs::Error::IOError { .. } | neo4rs::Error::ConnectionError) || is_conflict(e)
}

/// The server rejected the login: at the handshake (`HELLO`), or on a connection whose
/// credentials it no longer accepts (`Neo.ClientError.Security.Unauthorized`).
fn is_rejected_login(e: &neo4rs::Error) -> bool {
    const UNAUTHORIZED: &str = "Neo.ClientError.Security.Unauthorized";
    match e {
        neo4rs::Error::AuthenticationError(_) => true,
        neo4rs::Error::Neo4j(e) => e.code() == UNAUTHORIZED,
        neo4rs::Error::UnexpectedMessage(text) => text.contains(UNAUTHORIZED),
        _ => false,
    }
}

/// The code of a uniqueness constraint's failure: for a node write, another writer created the
/// node first (see the module's notes).
const TAKEN_ID: &str = "Neo.ClientError.Schema.ConstraintValidationFailed";

/// A node write failed because another transaction created the node it merges first (the
/// only uniqueness constraint is the one on `id`); its `MERGE` finds the node when run again.
fn is_taken_id(e: &neo4rs::Error) -> bool {
    match e {
        neo4rs::Error::Neo4j(e) => e.code() == TAKEN_ID,
        // ArcadeDB checks the constraint at COMMIT, which neo4rs reports this way.
        neo4rs::Error::UnexpectedMessage(text) => text.contains(TAKEN_ID),
        _ => false,
    }
}

/// An error the server classes as transient (a conflict with a concurrent transaction, a
/// deadlock): retrying the same statement at once is expected to succeed.
fn is_conflict(e: &neo4rs::Error) -> bool {
    match e {
        neo4rs::Error::Neo4j(e) => e.code().starts_with("Neo.TransientError"),
        // neo4rs reports a failed COMMIT as an unexpected message that quotes the failure.
        neo4rs::Error::UnexpectedMessage(text) => text.contains("Neo.TransientError"),
        _ => false,
    }
}

/// A random number below `n` (`n` > 0), from the standard library's randomly seeded hasher.
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n.max(1)
}

fn graph_error(action: &str, message: impl Into<String>, transient: bool) -> Error {
    Error::Store {
        store: StoreKind::Graph,
        action: action.to_owned(),
        message: message.into(),
        transient,
        busy: false,
    }
}

fn decode_error(action: &str, e: impl std::fmt::Display) -> Error {
    graph_error(action, format!("unexpected answer: {e}"), false)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(id: i64, version: i64, name: &str) -> GraphNode {
        GraphNode {
            id,
            props: json!({ VERSION_KEY: version, "name": name }).as_object().cloned().unwrap(),
            edges: Vec::new(),
        }
    }

    /// Shared writes carry each node once: the copy of the highest version, the later one on a
    /// tie, at the place of the node's first copy.
    #[test]
    fn merged_writes_keep_one_copy_of_the_highest_version() {
        let merged = merge_writes(vec![
            vec![node(1, 2, "a"), node(2, 1, "b")],
            vec![node(1, 1, "older")],
            vec![node(3, 1, "c"), node(2, 1, "tie")],
        ]);
        let got: Vec<(i64, &str)> = merged.iter().map(|n| (n.id, n.props["name"].as_str().unwrap())).collect();
        assert_eq!(got, [(1, "a"), (2, "tie"), (3, "c")]);
    }
}
