//! Chroma (server 1.x) over its HTTP API v2, through a small client of our own: the handful of
//! endpoints the vector store needs, with timeouts, collection ids cached per process, and
//! concurrent queries and small upserts of one collection sharing requests (`coalesce`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::{MetaFilter, VectorDoc, VectorHit, VectorStore};
use crate::error::{Error, Result, StoreKind};
use crate::secrets::{redact_url, scrub_password};
use crate::store::coalesce::Coalescer;

/// Documents per upsert request (Chroma accepts up to its `max_batch_size`, 5,461 on 1.5).
const UPSERT_BATCH: usize = 500;
/// Requests one client has in flight at once; more wait for a turn in this process, where
/// the wait has no time limit (the node's own timeout bounds it), instead of in the server,
/// where it counts against the request's timeout. A hundred concurrent workflow runs made
/// Chroma answer later than the projection timeout, and its breaker opened (the soak). The
/// heartbeat ([`VectorStore::ping`]) takes no turn.
pub const MAX_IN_FLIGHT: usize = 8;

/// A Chroma server: one collection per model, named `{prefix}{table}`, cosine space.
pub struct ChromaStore {
    http: reqwest::Client,
    /// `{url}/api/v2`.
    api: String,
    /// `{api}/tenants/{tenant}/databases/{database}`.
    scope: String,
    prefix: String,
    /// Collection ids by logical name, filled on first use.
    ids: RwLock<HashMap<&'static str, String>>,
    /// Turns to send a request ([`MAX_IN_FLIGHT`]).
    in_flight: tokio::sync::Semaphore,
    /// Concurrent queries sharing requests, by collection, `where` clause and dimension.
    queries: Coalescer<QueryKey, (Vec<f32>, usize), Vec<VectorHit>>,
    /// Concurrent small upserts sharing requests, by collection.
    upserts: Coalescer<&'static str, Vec<VectorDoc>, ()>,
}

/// Which queries can share a request: collection, `where` clause (as JSON text), dimension.
type QueryKey = (&'static str, Option<String>, usize);

/// Upsert calls one shared request carries at most (each a write's few documents).
pub const MAX_UPSERTS_PER_REQUEST: usize = 64;

/// The documents of several upserts as one: a document upserted twice keeps its later copy
/// (a request may not name an id twice). Which copy is current does not rest on this order:
/// each writer checks afterwards that its row did not move on, and re-applies it if it did.
fn merge_upserts(batch: Vec<Vec<VectorDoc>>) -> Vec<VectorDoc> {
    let mut docs: Vec<VectorDoc> = batch.into_iter().flatten().collect();
    let mut seen = std::collections::HashSet::new();
    let mut keep: Vec<bool> = docs.iter().rev().map(|d| seen.insert(d.id.clone())).collect();
    keep.reverse();
    let mut keep = keep.into_iter();
    docs.retain(|_| keep.next().unwrap_or(true));
    docs
}

/// Query vectors one request carries at most. Chroma answers a request of many vectors in
/// one pass over its index; this bounds the request's size (about 1.6 KB of JSON per
/// 384-dimension vector) and the wait of the last caller in it.
pub const MAX_QUERIES_PER_REQUEST: usize = 64;

#[derive(Deserialize)]
struct CollectionInfo {
    id: String,
}

/// Metadata as Chroma returns it: one optional map per document.
type Metadatas = Vec<Option<Map<String, Json>>>;

/// Query answers come as one list per query vector, in the order they were sent.
#[derive(Deserialize)]
struct QueryResponse {
    ids: Vec<Vec<String>>,
    distances: Option<Vec<Vec<Option<f32>>>>,
    metadatas: Option<Vec<Metadatas>>,
}

#[derive(Deserialize)]
struct GetResponse {
    ids: Vec<String>,
    embeddings: Option<Vec<Vec<f32>>>,
    documents: Option<Vec<Option<String>>>,
    metadatas: Option<Metadatas>,
}

/// Why a request failed: the collection is gone (refresh its id), or anything else.
enum Failure {
    NotFound,
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

impl ChromaStore {
    /// A client for the Chroma server at `url` (`http://host:port`), in the default tenant
    /// and database, whose collections are named `{prefix}{table}`. Nothing is sent until the
    /// first call, so a server that is down now does not stop the application.
    ///
    /// The prefix must be 1 to 64 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self> {
        let trimmed = url.trim_end_matches('/');
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(Error::Config(format!(
                "chroma_url must start with http:// or https://, got '{}'",
                redact_url(url)
            )));
        }
        super::check_prefix(prefix)?;
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("building the Chroma client: {e}")))?;
        let api = format!("{trimmed}/api/v2");
        let scope = format!("{api}/tenants/default_tenant/databases/default_database");
        Ok(ChromaStore {
            http,
            api,
            scope,
            prefix: prefix.to_owned(),
            ids: RwLock::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            queries: Coalescer::new(StoreKind::Vector, MAX_QUERIES_PER_REQUEST),
            // A write queued behind upserts that are not answered gives up after the timeout
            // its own request would have: its outbox record stays for sync.
            upserts: Coalescer::new(StoreKind::Vector, MAX_UPSERTS_PER_REQUEST).with_wait_limit(timeout, |limit| {
                vector_error(
                    "upserting documents",
                    format!("the upserts ahead of this one in the shared queue were not answered within {limit:?}"),
                    true,
                )
            }),
        })
    }

    /// The Chroma name of a logical collection.
    pub fn collection_name(&self, collection: &str) -> String {
        format!("{}{}", self.prefix, collection)
    }

    /// Requests sent now and not yet answered (the heartbeat aside), at most
    /// [`MAX_IN_FLIGHT`]; calls beyond that wait for a turn.
    pub fn requests_in_flight(&self) -> usize {
        MAX_IN_FLIGHT - self.in_flight.available_permits()
    }

    /// Sends a request when a turn is free ([`MAX_IN_FLIGHT`]).
    async fn send(&self, method: Method, url: &str, body: Option<&Json>, action: &str) -> std::result::Result<Json, Failure> {
        // Never closed: the store holds it. The request's timeout starts after the wait.
        let _turn = self.in_flight.acquire().await.expect("the request semaphore is never closed");
        self.send_now(method, url, body, action).await
    }

    /// Sends a request without waiting for a turn: only for the heartbeat, which must say
    /// whether the server answers even while every turn is taken by slow requests (a health
    /// check queued behind them reported a busy server as not answering).
    async fn send_now(&self, method: Method, url: &str, body: Option<&Json>, action: &str) -> std::result::Result<Json, Failure> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| Failure::Other(request_error(action, &e)))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Failure::Other(request_error(action, &e)))?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .or_else(|_| if text.trim().is_empty() { Ok(Json::Null) } else { Err(()) })
                .map_err(|_| Failure::Other(vector_error(action, format!("unreadable answer: {}", excerpt(&text)), false)));
        }
        let message = serde_json::from_str::<Json>(&text)
            .ok()
            .and_then(|j| j.get("message").and_then(Json::as_str).map(str::to_owned))
            .unwrap_or_else(|| excerpt(&text));
        if status == StatusCode::NOT_FOUND || message.contains("does not exist") {
            return Err(Failure::NotFound);
        }
        Err(Failure::Other(vector_error(
            action,
            format!("HTTP {status}: {message}"),
            status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
        )))
    }

    /// The id of a collection: cached, else fetched (created when `create`). `None` when it
    /// does not exist and was not to be created.
    async fn collection_id(&self, collection: &'static str, create: bool) -> Result<Option<String>> {
        if let Some(id) = self.ids.read().unwrap_or_else(|e| e.into_inner()).get(collection) {
            return Ok(Some(id.clone()));
        }
        let name = self.collection_name(collection);
        let found = if create {
            let body = json!({"name": name, "metadata": {"hnsw:space": "cosine"}, "get_or_create": true});
            self.send(
                Method::POST,
                &format!("{}/collections", self.scope),
                Some(&body),
                "creating a collection",
            )
            .await
        } else {
            self.send(
                Method::GET,
                &format!("{}/collections/{name}", self.scope),
                None,
                "finding a collection",
            )
            .await
        };
        let info = match found {
            Ok(info) => info,
            Err(Failure::NotFound) => return Ok(None),
            Err(Failure::Other(e)) => return Err(e),
        };
        let info: CollectionInfo =
            serde_json::from_value(info).map_err(|e| vector_error("reading a collection", format!("unexpected answer: {e}"), false))?;
        self.ids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(collection, info.id.clone());
        Ok(Some(info.id))
    }

    /// One query request for several query vectors (each with its `top_k`) under one `where`
    /// clause: Chroma answers them all with the largest `top_k`, and each gets its own first
    /// `top_k` hits. Only distances and metadata come back: Search reads the rows from the
    /// relational store.
    async fn send_queries(
        &self,
        collection: &'static str,
        where_clause: Option<Json>,
        batch: Vec<(Vec<f32>, usize)>,
    ) -> Result<Vec<Vec<VectorHit>>> {
        let n_results = batch.iter().map(|(_, k)| *k).max().unwrap_or(1);
        let mut body = json!({
            "query_embeddings": batch.iter().map(|(v, _)| v).collect::<Vec<_>>(),
            "n_results": n_results,
            "include": ["distances", "metadatas"],
        });
        if let Some(where_clause) = where_clause {
            body["where"] = where_clause;
        }
        let Some(answer) = self.call(collection, false, Method::POST, "query", Some(&body), "querying").await? else {
            return Ok(vec![Vec::new(); batch.len()]);
        };
        let answer: QueryResponse =
            serde_json::from_value(answer).map_err(|e| vector_error("querying", format!("unexpected answer: {e}"), false))?;
        let mut distances = answer.distances.unwrap_or_default().into_iter();
        let mut metadatas = answer.metadatas.unwrap_or_default().into_iter();
        Ok(answer
            .ids
            .into_iter()
            .zip(&batch)
            .map(|(ids, (_, top_k))| {
                let distances = distances.next().unwrap_or_default();
                let metadatas = metadatas.next().unwrap_or_default();
                ids.into_iter()
                    .take(*top_k)
                    .enumerate()
                    .map(|(i, id)| VectorHit {
                        id,
                        distance: distances.get(i).copied().flatten().unwrap_or(f32::MAX),
                        metadata: metadatas.get(i).cloned().flatten().unwrap_or_default(),
                    })
                    .collect()
            })
            .collect())
    }

    /// Upserts `docs` in requests of at most [`UPSERT_BATCH`] documents.
    async fn send_upserts(&self, collection: &'static str, docs: Vec<VectorDoc>) -> Result<()> {
        let mut docs = docs;
        while !docs.is_empty() {
            let rest = docs.split_off(docs.len().min(UPSERT_BATCH));
            let chunk = std::mem::replace(&mut docs, rest);
            // Hundreds of vectors are milliseconds of formatting: off the async workers.
            let body = tokio::task::spawn_blocking(move || {
                json!({
                    "ids": chunk.iter().map(|d| &d.id).collect::<Vec<_>>(),
                    "embeddings": chunk.iter().map(|d| &d.embedding).collect::<Vec<_>>(),
                    "documents": chunk.iter().map(|d| &d.document).collect::<Vec<_>>(),
                    "metadatas": chunk.iter().map(|d| &d.metadata).collect::<Vec<_>>(),
                })
            })
            .await
            .map_err(|e| vector_error("upserting documents", e.to_string(), false))?;
            self.call(collection, true, Method::POST, "upsert", Some(&body), "upserting documents")
                .await?;
        }
        Ok(())
    }

    /// Sends one top-`top_k` query in a request of its own, shared with no other: what every
    /// query cost before requests were shared. The workflow bench measures the
    /// one-query-per-request ceiling with it; applications call [`VectorStore::query`].
    pub async fn query_alone(&self, collection: &'static str, vector: &[f32], top_k: usize) -> Result<Vec<VectorHit>> {
        let top_k = top_k.min(super::MAX_QUERY_RESULTS);
        let mut answers = self.send_queries(collection, None, vec![(vector.to_vec(), top_k)]).await?;
        answers
            .pop()
            .ok_or_else(|| vector_error("querying", "the server answered no query", false))
    }

    /// Upsert calls and upsert requests sent so far (calls of fewer than `UPSERT_BATCH`
    /// documents share requests when they arrive together).
    pub fn upsert_counts(&self) -> (u64, u64) {
        self.upserts.counts()
    }

    /// Query vectors asked and query requests sent so far: under concurrent searches of one
    /// collection, requests carry several queries (see [`MAX_QUERIES_PER_REQUEST`]).
    pub fn query_counts(&self) -> (u64, u64) {
        self.queries.counts()
    }

    fn forget(&self, collection: &'static str) {
        self.ids.write().unwrap_or_else(|e| e.into_inner()).remove(collection);
    }

    /// Calls `{scope}/collections/{id}/{endpoint}`; when the cached id went stale (the
    /// collection was dropped and made again elsewhere), refreshes it once. `Ok(None)` when
    /// the collection does not exist and `create` is false.
    async fn call(
        &self,
        collection: &'static str,
        create: bool,
        method: Method,
        endpoint: &str,
        body: Option<&Json>,
        action: &str,
    ) -> Result<Option<Json>> {
        for _ in 0..2 {
            let Some(id) = self.collection_id(collection, create).await? else {
                return Ok(None);
            };
            let url = format!("{}/collections/{id}/{endpoint}", self.scope);
            match self.send(method.clone(), &url, body, action).await {
                Ok(v) => return Ok(Some(v)),
                Err(Failure::NotFound) => self.forget(collection),
                Err(Failure::Other(e)) => return Err(e),
            }
        }
        if create {
            Err(vector_error(action, "the collection disappeared while it was being written", true))
        } else {
            Ok(None)
        }
    }
}

#[async_trait]
impl VectorStore for ChromaStore {
    fn backend(&self) -> &'static str {
        "chroma"
    }

    fn stored_name(&self, collection: &str) -> String {
        self.collection_name(collection)
    }

    async fn upsert(&self, collection: &'static str, docs: Vec<VectorDoc>) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        if docs.len() >= UPSERT_BATCH {
            return self.send_upserts(collection, docs).await;
        }
        // Small upserts (a write's own projection) share requests with concurrent ones.
        self.upserts
            .run(collection, docs, |batch| async move {
                let n = batch.len();
                self.send_upserts(collection, merge_upserts(batch)).await?;
                Ok(vec![(); n])
            })
            .await
    }

    async fn delete(&self, collection: &'static str, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(UPSERT_BATCH) {
            let body = json!({ "ids": chunk });
            self.call(collection, false, Method::POST, "delete", Some(&body), "deleting documents")
                .await?;
        }
        Ok(())
    }

    async fn query(&self, collection: &'static str, vector: &[f32], top_k: usize, filter: Option<&MetaFilter>) -> Result<Vec<VectorHit>> {
        if filter == Some(&MetaFilter::Nothing) || top_k == 0 {
            return Ok(Vec::new());
        }
        if vector.iter().any(|x| !x.is_finite()) {
            // JSON has no NaN or infinity: such a query could not be sent, alone or shared.
            return Err(vector_error(
                "querying",
                "the query vector holds a value that is not a finite number",
                false,
            ));
        }
        let where_clause = filter.map(where_clause);
        // Queries share a request when Chroma can answer them together: one collection, one
        // `where` clause, one dimension (a query of another dimension cannot fail others).
        let key = (collection, where_clause.as_ref().map(Json::to_string), vector.len());
        let top_k = top_k.min(super::MAX_QUERY_RESULTS);
        self.queries
            .run(key, (vector.to_vec(), top_k), |batch| {
                self.send_queries(collection, where_clause.clone(), batch)
            })
            .await
    }

    async fn get(&self, collection: &'static str, ids: Option<&[String]>, limit: usize, offset: usize) -> Result<Vec<VectorDoc>> {
        let mut body = json!({"include": ["embeddings", "documents", "metadatas"], "limit": limit, "offset": offset});
        if let Some(ids) = ids {
            body["ids"] = json!(ids);
        }
        let Some(answer) = self
            .call(collection, false, Method::POST, "get", Some(&body), "reading documents")
            .await?
        else {
            return Ok(Vec::new());
        };
        let answer: GetResponse =
            serde_json::from_value(answer).map_err(|e| vector_error("reading documents", format!("unexpected answer: {e}"), false))?;
        let mut embeddings = answer.embeddings.unwrap_or_default().into_iter();
        let mut documents = answer.documents.unwrap_or_default().into_iter();
        let mut metadatas = answer.metadatas.unwrap_or_default().into_iter();
        Ok(answer
            .ids
            .into_iter()
            .map(|id| VectorDoc {
                id,
                embedding: embeddings.next().unwrap_or_default(),
                document: documents.next().flatten().unwrap_or_default(),
                metadata: metadatas.next().flatten().unwrap_or_default(),
            })
            .collect())
    }

    async fn count(&self, collection: &'static str) -> Result<u64> {
        let answer = self
            .call(collection, false, Method::GET, "count", None, "counting documents")
            .await?;
        Ok(answer.and_then(|n| n.as_u64()).unwrap_or(0))
    }

    async fn drop_collection(&self, collection: &'static str) -> Result<()> {
        self.forget(collection);
        let url = format!("{}/collections/{}", self.scope, self.collection_name(collection));
        match self.send(Method::DELETE, &url, None, "dropping a collection").await {
            Ok(_) | Err(Failure::NotFound) => Ok(()),
            Err(Failure::Other(e)) => Err(e),
        }
    }

    async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        match self
            .send_now(Method::GET, &format!("{}/heartbeat", self.api), None, "pinging")
            .await
        {
            Ok(_) => Ok(start.elapsed()),
            Err(Failure::NotFound) => Err(vector_error(
                "pinging",
                "no heartbeat endpoint: is this a Chroma 1.x server?",
                false,
            )),
            Err(Failure::Other(e)) => Err(e),
        }
    }
}

/// Chroma's `where` clause for a filter (`Nothing` is answered before a query is sent).
fn where_clause(filter: &MetaFilter) -> Json {
    match filter {
        MetaFilter::And(items) => json!({"$and": items.iter().map(where_clause).collect::<Vec<_>>()}),
        MetaFilter::Or(items) => json!({"$or": items.iter().map(where_clause).collect::<Vec<_>>()}),
        MetaFilter::Compare { key, op, value } => {
            let mut inner = Map::new();
            inner.insert(op.name().to_owned(), value.clone());
            let mut outer = Map::new();
            outer.insert((*key).to_owned(), Json::Object(inner));
            Json::Object(outer)
        }
        MetaFilter::Nothing => json!({"$and": [{"id": {"$eq": -1}}, {"id": {"$ne": -1}}]}),
    }
}

fn excerpt(text: &str) -> String {
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

fn vector_error(action: &str, message: impl Into<String>, transient: bool) -> Error {
    Error::Store {
        store: StoreKind::Vector,
        action: action.to_owned(),
        message: message.into(),
        transient,
        busy: false,
    }
}

/// A transport error (connection refused, timeout, ...) with its causes, URL redacted.
fn request_error(action: &str, e: &reqwest::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(url) = e.url() {
        message = scrub_password(&message, url.as_str());
    }
    vector_error(action, message, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::vector::MetaOp;

    /// The heartbeat does not wait for a turn: with every turn taken (by requests to a server
    /// that is slow to answer), a ping still goes out and comes back, here with the error of
    /// an address where nothing listens. It used to wait until a turn was free.
    #[tokio::test]
    async fn a_ping_does_not_wait_behind_the_requests_in_flight() {
        let store = ChromaStore::new("http://127.0.0.1:1", "dataflow_", Duration::from_secs(2)).unwrap();
        let _every_turn = store.in_flight.acquire_many(MAX_IN_FLIGHT as u32).await.unwrap();
        assert_eq!(store.requests_in_flight(), MAX_IN_FLIGHT);
        // A bound on the wait, so that a ping that queues fails the test instead of hanging it.
        let pinged = tokio::time::timeout(Duration::from_secs(60), store.ping())
            .await
            .expect("the ping waited for a turn");
        let err = pinged.expect_err("nothing listens on port 1");
        assert!(err.is_transient() && err.to_string().contains("pinging"), "{err}");
    }

    /// Shared upserts send each id once, the copy queued last, in first-seen order.
    #[test]
    fn merged_upserts_name_each_id_once_with_its_last_copy() {
        let doc = |id: &str, document: &str| VectorDoc {
            id: id.to_owned(),
            embedding: vec![1.0],
            document: document.to_owned(),
            metadata: Map::new(),
        };
        let merged = merge_upserts(vec![vec![doc("1", "a"), doc("2", "b")], vec![doc("3", "c")], vec![doc("1", "d")]]);
        let got: Vec<(&str, &str)> = merged.iter().map(|d| (d.id.as_str(), d.document.as_str())).collect();
        assert_eq!(got, [("2", "b"), ("3", "c"), ("1", "d")]);
    }

    #[test]
    fn where_clauses_follow_chroma_syntax() {
        let f = MetaFilter::And(vec![
            MetaFilter::Compare {
                key: "tenant_id",
                op: MetaOp::Eq,
                value: json!("acme"),
            },
            MetaFilter::Compare {
                key: "price",
                op: MetaOp::Gte,
                value: json!(10.0),
            },
        ]);
        assert_eq!(
            where_clause(&f),
            json!({"$and": [{"tenant_id": {"$eq": "acme"}}, {"price": {"$gte": 10.0}}]})
        );
    }
}
