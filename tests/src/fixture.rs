//! Per-test stores on the harness's live servers: a fresh PostgreSQL schema with every model
//! migrated, a Redis key prefix, a Chroma collection prefix and a graph label namespace of its
//! own, and ways to read the stores back directly (plain SQL, raw Redis, Chroma's HTTP API,
//! plain Cypher over Bolt) rather than through the code under test.

use std::sync::Arc;

use dataflow_core::sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, Value};
use dataflow_core::{Config, Context, GraphConfig, Stores};
use serde_json::{Map, Value as Json, json};

use crate::harness::Services;

/// Which set of backends a fixture runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The harness's live servers: PostgreSQL, Redis, Chroma and the Bolt graph server.
    Servers,
    /// The embedded set: one SQLite file (relational, graph and vector stores) and the
    /// in-process cache.
    Embedded,
}

/// Stores for one test.
pub struct Fixture {
    /// Which backends the stores are.
    pub backend: Backend,
    /// With [`Backend::Embedded`]: the directory holding the test's SQLite file.
    pub home: Option<std::path::PathBuf>,
    /// A context without a tenant.
    pub ctx: Context,
    /// The PostgreSQL schema the test owns.
    pub schema: String,
    /// The prefix of every cache key the test writes.
    pub cache_prefix: String,
    /// The Redis server's URL.
    pub redis_url: String,
    /// With projections: the Chroma server's URL and this test's collection prefix.
    pub chroma: Option<(String, String)>,
    /// With projections: a Bolt connection of the test's own and its label namespace.
    pub graph: Option<(Arc<neo4rs::Graph>, String)>,
    /// The stores' configuration.
    pub config: Config,
}

/// Which stores a fixture connects.
#[derive(Clone, Copy)]
struct Wanted {
    tables: bool,
    projections: bool,
}

impl Fixture {
    /// PostgreSQL (a fresh schema with every shipped model migrated) and Redis.
    pub async fn new(hint: &str) -> Fixture {
        Fixture::build(
            hint,
            Wanted {
                tables: true,
                projections: false,
            },
            |c| c,
        )
        .await
    }

    /// PostgreSQL and Redis as [`Fixture::new`] gives them, with the configuration adjusted by
    /// `adjust` before connecting (the round-trip tests point it at their wire counters).
    pub async fn with_config(hint: &str, adjust: impl FnOnce(Config) -> Config) -> Fixture {
        Fixture::build(
            hint,
            Wanted {
                tables: true,
                projections: false,
            },
            adjust,
        )
        .await
    }

    /// All four stores: PostgreSQL, Redis, Chroma and the Bolt graph server, every shipped
    /// model migrated.
    pub async fn with_projections(hint: &str) -> Fixture {
        Fixture::build(
            hint,
            Wanted {
                tables: true,
                projections: true,
            },
            |c| c,
        )
        .await
    }

    /// All four stores, with the configuration adjusted by `adjust` before connecting.
    pub async fn with_projections_config(hint: &str, adjust: impl FnOnce(Config) -> Config) -> Fixture {
        Fixture::build(
            hint,
            Wanted {
                tables: true,
                projections: true,
            },
            adjust,
        )
        .await
    }

    /// Stores on a fresh, empty schema: any query that reached PostgreSQL would fail with
    /// "relation does not exist", which proves input was rejected before a query was sent.
    pub async fn without_tables(hint: &str) -> Fixture {
        Fixture::build(
            hint,
            Wanted {
                tables: false,
                projections: false,
            },
            |c| c,
        )
        .await
    }

    /// All four stores over a fresh, empty schema (see [`Fixture::without_tables`]).
    pub async fn with_projections_without_tables(hint: &str) -> Fixture {
        Fixture::build(
            hint,
            Wanted {
                tables: false,
                projections: true,
            },
            |c| c,
        )
        .await
    }

    /// Every shipped model migrated on `backend`, with all four stores: on the servers what
    /// [`Fixture::with_projections`] gives; embedded, every store is.
    pub async fn with_projections_on(backend: Backend, hint: &str) -> Fixture {
        Fixture::with_projections_config_on(backend, hint, |c| c).await
    }

    /// [`Fixture::with_projections_on`] with the configuration changed by `adjust` first.
    pub async fn with_projections_config_on(backend: Backend, hint: &str, adjust: impl FnOnce(Config) -> Config) -> Fixture {
        match backend {
            Backend::Servers => Fixture::with_projections_config(hint, adjust).await,
            Backend::Embedded => Fixture::build_embedded(hint, adjust).await,
        }
    }

    /// Every shipped model migrated on `backend`, with a cache: on the servers what
    /// [`Fixture::new`] gives (no vector or graph store); embedded, all four stores.
    pub async fn on(backend: Backend, hint: &str) -> Fixture {
        let wanted = Wanted {
            tables: true,
            projections: false,
        };
        match backend {
            Backend::Servers => Fixture::build(hint, wanted, |c| c).await,
            Backend::Embedded => Fixture::build_embedded(hint, |c| c).await,
        }
    }

    /// The embedded set (SQLite for the relational, vector and graph stores, and the
    /// in-process cache) in a fresh directory, every shipped model migrated.
    async fn build_embedded(hint: &str, adjust: impl FnOnce(Config) -> Config) -> Fixture {
        let home = crate::embedded::fresh_home(hint);
        let config = adjust(Config::embedded(&home));
        let stores = connect(&config, true).await;
        Fixture {
            backend: Backend::Embedded,
            home: Some(home),
            ctx: Context::new(stores),
            schema: String::new(),
            cache_prefix: config.cache_prefix.clone(),
            redis_url: String::new(),
            chroma: None,
            graph: None,
            config,
        }
    }

    async fn build(hint: &str, wanted: Wanted, adjust: impl FnOnce(Config) -> Config) -> Fixture {
        let services = Services::global().await;
        let schema = services.fresh_pg_schema(hint).await;
        let cache_prefix = services.unique_name(hint);
        let redis_url = services.redis_url().await;
        let mut config = Config::new(services.postgres_url().await)
            .with_schema(schema.clone())
            .with_redis(redis_url.clone())
            .with_cache_prefix(cache_prefix.clone());
        let mut chroma = None;
        let mut graph = None;
        if wanted.projections {
            let chroma_url = services.chroma_url().await;
            let vector_prefix = format!("{cache_prefix}_");
            let bolt = services.bolt().await;
            let namespace = format!("{cache_prefix}_");
            config = config
                .with_chroma(chroma_url.clone())
                .with_vector_prefix(vector_prefix.clone())
                .with_graph(GraphConfig {
                    url: bolt.uri.clone(),
                    user: bolt.user.clone(),
                    password: bolt.password.clone(),
                    database: Some(bolt.database.clone()),
                })
                .with_graph_namespace(namespace.clone());
            let direct = neo4rs::ConfigBuilder::default()
                .uri(bolt.uri.as_str())
                .user(bolt.user.as_str())
                .password(bolt.password.as_str())
                .db(bolt.database.as_str())
                .max_connections(4)
                .build()
                .expect("a Bolt configuration");
            let direct = neo4rs::Graph::connect(direct).await.expect("connecting to the Bolt server");
            chroma = Some((chroma_url, vector_prefix));
            graph = Some((Arc::new(direct), namespace));
        }
        let config = adjust(config);
        let stores = connect(&config, wanted.tables).await;
        Fixture {
            backend: Backend::Servers,
            home: None,
            ctx: Context::new(stores),
            schema,
            cache_prefix,
            redis_url,
            chroma,
            graph,
            config,
        }
    }

    /// Creates the five categories [`sample_product`] rows point at (ids 1 to 5, through the
    /// Category BulkUpsert node), so that their foreign keys name real rows.
    pub async fn sample_categories(&self) {
        use dataflow_core::Node;
        let rows = (1..=5)
            .map(|id| json!({"id": id, "slug": format!("sample-{id}"), "name": format!("Sample category {id}"), "description": "", "parent_id": null, "active": true}))
            .collect();
        let out = dataflow_models::CategoryBulkUpsertNode
            .run(
                &self.ctx,
                dataflow_core::nodes::bulk_upsert::BulkUpsertInput {
                    rows,
                    ..Default::default()
                },
            )
            .await
            .expect("the sample categories");
        assert_eq!((out.inserted, out.errors.len()), (5, 0), "the sample categories: {out:?}");
    }

    /// The context acting for `tenant`.
    pub fn tenant(&self, tenant: &str) -> Context {
        self.ctx.with_tenant(tenant).expect("a valid tenant id")
    }

    /// The pooled relational connection (on PostgreSQL its search path is the test's schema).
    pub fn db(&self) -> &DatabaseConnection {
        self.ctx.stores().relational().connection()
    }

    /// Runs plain SQL with `$n` parameters and returns every row. On SQLite `$n` is sent as
    /// `?n`, SQLite's spelling of the same positional parameter.
    pub async fn sql(&self, sql: &str, values: Vec<Value>) -> Vec<QueryResult> {
        let backend = self.ctx.stores().relational().backend();
        let text = if backend == DbBackend::Sqlite {
            positional_to_sqlite(sql)
        } else {
            sql.to_owned()
        };
        self.db()
            .query_all_raw(Statement::from_sql_and_values(backend, text, values))
            .await
            .unwrap_or_else(|e| panic!("plain SQL failed: {sql}: {e}"))
    }

    /// The row of `table` with primary key `id` as a JSON object of its columns, read in plain
    /// SQL: `to_jsonb` on PostgreSQL; on SQLite each column decoded by its model field's type
    /// (booleans are stored as 0/1, JSON and timestamps as text there).
    pub async fn stored_row(&self, table: &str, id: i64) -> Json {
        if self.ctx.stores().relational().backend() == DbBackend::Postgres {
            let rows = self
                .sql(
                    &format!("SELECT to_jsonb(t) AS j FROM \"{table}\" t WHERE id = $1"),
                    vec![id.into()],
                )
                .await;
            assert_eq!(rows.len(), 1, "row {id} of {table}");
            return rows[0].try_get("", "j").expect("a JSON row");
        }
        let rows = self.sql(&format!("SELECT * FROM \"{table}\" WHERE id = $1"), vec![id.into()]).await;
        assert_eq!(rows.len(), 1, "row {id} of {table}");
        sqlite_row_to_json(table, &rows[0])
    }

    /// Every row of `table` (soft-deleted ones too) by primary key, each as
    /// [`Fixture::stored_row`] reads it, in plain SQL.
    pub async fn all_rows(&self, table: &str) -> std::collections::BTreeMap<i64, Json> {
        let postgres = self.ctx.stores().relational().backend() == DbBackend::Postgres;
        let sql = if postgres {
            format!("SELECT id, to_jsonb(t) AS j FROM \"{table}\" t")
        } else {
            format!("SELECT * FROM \"{table}\"")
        };
        let mut out = std::collections::BTreeMap::new();
        for row in self.sql(&sql, vec![]).await {
            let id: i64 = row.try_get("", "id").expect("an id column");
            let json = if postgres {
                row.try_get("", "j").expect("a JSON row")
            } else {
                sqlite_row_to_json(table, &row)
            };
            out.insert(id, json);
        }
        out
    }

    /// `SELECT COUNT(*) FROM table [WHERE condition]` in plain SQL.
    pub async fn count(&self, table: &str, condition: &str) -> i64 {
        let sql = if condition.is_empty() {
            format!("SELECT COUNT(*) AS n FROM \"{table}\"")
        } else {
            format!("SELECT COUNT(*) AS n FROM \"{table}\" WHERE {condition}")
        };
        let rows = self.sql(&sql, vec![]).await;
        rows[0].try_get("", "n").expect("a count")
    }

    /// The raw value Redis holds under `key`, read directly.
    pub async fn redis_get(&self, key: &str) -> Option<String> {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis url");
        let mut con = client.get_multiplexed_async_connection().await.expect("connecting to redis");
        redis::cmd("GET").arg(key).query_async(&mut con).await.expect("redis GET")
    }
}

impl Fixture {
    /// Every document of `table`'s collection as the vector store holds it, read around the
    /// code under test (Chroma's own API, or plain SQL on the embedded store's table):
    /// `id → (document, metadata)`. Empty when the collection does not exist.
    pub async fn vector_documents(&self, table: &str) -> std::collections::BTreeMap<String, (String, Map<String, Json>)> {
        if self.backend == Backend::Servers {
            return self.chroma_documents(table).await;
        }
        let rows = self
            .sql(
                "SELECT id, document, metadata FROM dataflow_vectors WHERE collection = $1",
                vec![format!("{}{table}", self.config.vector_prefix).into()],
            )
            .await;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("", "id").expect("an id");
                let document: String = row.try_get("", "document").expect("a document");
                let metadata: String = row.try_get("", "metadata").expect("metadata");
                (id, (document, serde_json::from_str(&metadata).expect("metadata is a JSON object")))
            })
            .collect()
    }

    /// Every document of `table`'s collection as Chroma's own API returns it:
    /// `id → (document, metadata)`. Empty when the collection does not exist.
    async fn chroma_documents(&self, table: &str) -> std::collections::BTreeMap<String, (String, Map<String, Json>)> {
        let (url, prefix) = self.chroma.as_ref().expect("a fixture with projections");
        let scope = format!("{url}/api/v2/tenants/default_tenant/databases/default_database/collections");
        let http = reqwest::Client::new();
        let found = http
            .get(format!("{scope}/{prefix}{table}"))
            .send()
            .await
            .expect("asking Chroma for a collection");
        let mut out = std::collections::BTreeMap::new();
        if found.status() == reqwest::StatusCode::NOT_FOUND {
            return out;
        }
        let collection: Json = found.json().await.expect("a collection");
        let id = collection["id"].as_str().expect("a collection id");
        let got: Json = http
            .post(format!("{scope}/{id}/get"))
            .json(&json!({"include": ["documents", "metadatas"], "limit": 100000}))
            .send()
            .await
            .expect("reading documents from Chroma")
            .json()
            .await
            .expect("Chroma's answer");
        let ids = got["ids"].as_array().cloned().unwrap_or_default();
        for (i, doc_id) in ids.iter().enumerate() {
            let document = got["documents"][i].as_str().unwrap_or_default().to_owned();
            let metadata = got["metadatas"][i].as_object().cloned().unwrap_or_default();
            out.insert(doc_id.as_str().unwrap_or_default().to_owned(), (document, metadata));
        }
        out
    }

    /// Runs plain Cypher on the graph server and returns every row as JSON objects of the
    /// returned columns. `{ns}` in the text is replaced by the test's label namespace.
    pub async fn cypher(&self, text: &str, params: Vec<(&str, neo4rs::BoltType)>) -> Vec<Map<String, Json>> {
        let (graph, namespace) = self.graph.as_ref().expect("a fixture with projections");
        let text = text.replace("{ns}", namespace);
        let mut query = neo4rs::query(&text);
        for (k, v) in params {
            query = query.param(k, v);
        }
        let mut stream = graph.execute(query).await.unwrap_or_else(|e| panic!("cypher {text}: {e}"));
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await.unwrap_or_else(|e| panic!("cypher {text}: {e}")) {
            rows.push(row.to().unwrap_or_else(|e| panic!("decoding a row of {text}: {e}")));
        }
        rows
    }

    /// The node of `label` with primary key `id` as the graph store holds it, read around the
    /// code under test (plain Cypher, or plain SQL on the embedded store's tables): its
    /// properties and its outgoing edges as `(relation, target label without namespace,
    /// target id)`, sorted.
    pub async fn graph_node(&self, label: &str, id: i64) -> Option<(Map<String, Json>, Vec<(String, String, i64)>)> {
        if self.backend == Backend::Embedded {
            let namespace = &self.config.graph_namespace;
            let stored = format!("{namespace}{label}");
            let rows = self
                .sql(
                    "SELECT props FROM dataflow_graph_nodes WHERE label = $1 AND id = $2",
                    vec![stored.clone().into(), id.into()],
                )
                .await;
            let props: String = rows.first()?.try_get("", "props").expect("properties");
            let edges = self
                .sql(
                    "SELECT rel, dst_label, dst_id FROM dataflow_graph_edges WHERE src_label = $1 AND src_id = $2 ORDER BY 1, 2, 3",
                    vec![stored.into(), id.into()],
                )
                .await
                .iter()
                .map(|row| {
                    let target: String = row.try_get("", "dst_label").expect("a label");
                    (
                        row.try_get("", "rel").expect("a relation"),
                        target.trim_start_matches(namespace.as_str()).to_owned(),
                        row.try_get("", "dst_id").expect("an id"),
                    )
                })
                .collect();
            return Some((serde_json::from_str(&props).expect("properties are a JSON object"), edges));
        }
        let namespace = self.graph.as_ref().expect("a fixture with projections").1.clone();
        let rows = self
            .cypher(
                &format!("MATCH (n:`{{ns}}{label}` {{id: $id}}) OPTIONAL MATCH (n)-[r]->(t) RETURN properties(n) AS props, collect([type(r), labels(t)[0], t.id]) AS edges"),
                vec![("id", id.into())],
            )
            .await;
        let row = rows.into_iter().next()?;
        let props = row["props"].as_object().cloned().unwrap_or_default();
        let mut edges: Vec<(String, String, i64)> = row["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e[0].as_str()?.to_owned(),
                    e[1].as_str()?.trim_start_matches(namespace.as_str()).to_owned(),
                    e[2].as_i64()?,
                ))
            })
            .collect();
        edges.sort();
        Some((props, edges))
    }
}

impl Fixture {
    /// How many graph nodes carry a label of this test's namespace, read around the code
    /// under test.
    pub async fn graph_node_count(&self) -> i64 {
        if self.backend == Backend::Embedded {
            let pattern = format!("{}%", self.config.graph_namespace.replace('%', "\\%").replace('_', "\\_"));
            let rows = self
                .sql(
                    "SELECT COUNT(*) AS n FROM dataflow_graph_nodes WHERE label LIKE $1 ESCAPE '\\'",
                    vec![pattern.into()],
                )
                .await;
            return rows[0].try_get("", "n").expect("a count");
        }
        let rows = self
            .cypher(
                "MATCH (n) WHERE any(l IN labels(n) WHERE l STARTS WITH '{ns}') RETURN count(n) AS n",
                vec![],
            )
            .await;
        rows[0]["n"].as_i64().expect("a count")
    }

    /// For the edges `(:label)-[:relation]->(:target)`, how many end at each target id, read
    /// around the code under test.
    pub async fn graph_edge_counts(&self, label: &str, relation: &str, target: &str) -> std::collections::BTreeMap<i64, i64> {
        if self.backend == Backend::Embedded {
            let ns = &self.config.graph_namespace;
            return self
                .sql(
                    "SELECT dst_id, COUNT(*) AS n FROM dataflow_graph_edges \
                     WHERE src_label = $1 AND rel = $2 AND dst_label = $3 GROUP BY dst_id",
                    vec![format!("{ns}{label}").into(), relation.into(), format!("{ns}{target}").into()],
                )
                .await
                .iter()
                .map(|r| (r.try_get("", "dst_id").expect("an id"), r.try_get("", "n").expect("a count")))
                .collect();
        }
        self.cypher(
            &format!("MATCH (p:`{{ns}}{label}`)-[:`{relation}`]->(c:`{{ns}}{target}`) RETURN c.id AS target, count(p) AS n"),
            vec![],
        )
        .await
        .iter()
        .map(|r| (r["target"].as_i64().expect("an id"), r["n"].as_i64().expect("a count")))
        .collect()
    }
}

/// Connects the stores of `config` and, with `tables`, migrates every shipped model.
async fn connect(config: &Config, tables: bool) -> Stores {
    let stores = Stores::connect(config).await.expect("connecting the stores");
    if tables {
        stores
            .migrate(&dataflow_models::all_models())
            .await
            .expect("migrating the shipped models");
    }
    stores
}

/// `$1`, `$2`, ... as `?1`, `?2`, ...; other `$` signs stay.
fn positional_to_sqlite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// A row of `table` read from SQLite as a JSON object of its columns, each decoded by its
/// model field's type (booleans are stored as 0/1, JSON and timestamps as text there).
fn sqlite_row_to_json(table: &str, row: &QueryResult) -> Json {
    let meta = dataflow_models::all_models()
        .into_iter()
        .find(|m| m.table == table)
        .unwrap_or_else(|| panic!("no shipped model has the table {table}"));
    let mut out = Map::new();
    for column in row.column_names() {
        let field = meta.fields.iter().find(|f| f.name == column).map(|f| f.ty);
        let value = match (column.as_str(), field) {
            (_, Some(dataflow_core::FieldType::Boolean)) => row.try_get::<Option<bool>>("", &column).ok().flatten().map(Json::from),
            (_, Some(dataflow_core::FieldType::Json)) => row
                .try_get::<Option<String>>("", &column)
                .ok()
                .flatten()
                .map(|t| serde_json::from_str(&t).unwrap_or_else(|e| panic!("{table}.{column} holds invalid JSON: {e}"))),
            (_, Some(dataflow_core::FieldType::Float)) => row.try_get::<Option<f64>>("", &column).ok().flatten().map(Json::from),
            (_, Some(dataflow_core::FieldType::Integer)) | ("version", None) => {
                row.try_get::<Option<i64>>("", &column).ok().flatten().map(Json::from)
            }
            _ => row.try_get::<Option<String>>("", &column).ok().flatten().map(Json::from),
        };
        out.insert(column, value.unwrap_or(Json::Null));
    }
    Json::Object(out)
}

/// A valid `Product` row as JSON; `i` makes the SKU unique and varies price (`i % 100 + 0.5`),
/// stock (`i`), `active` (even `i`) and category (`i % 5 + 1`).
pub fn sample_product(i: usize) -> serde_json::Value {
    serde_json::json!({"sku": format!("SKU-{i:05}"), "name": format!("Product {i}"), "description": "A sturdy tool",
           "price": (i % 100) as f64 + 0.5, "currency": "EUR", "stock": i as i64, "weight_kg": null,
           "active": i.is_multiple_of(2), "category_id": (i % 5) as i64 + 1, "manufacturer_id": null, "supplier_id": null,
           "attributes": {}})
}
