//! Per-test stores on the harness's live servers: a fresh PostgreSQL schema with every model
//! migrated, a Redis key prefix of its own, and ways to read the stores back directly
//! (plain SQL, raw Redis) rather than through the nodes under test.

use dataflow_core::sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, Value};
use dataflow_core::{Config, Context, Stores};

use crate::harness::Services;

/// Stores for one test.
pub struct Fixture {
    /// A context without a tenant.
    pub ctx: Context,
    /// The PostgreSQL schema the test owns.
    pub schema: String,
    /// The prefix of every cache key the test writes.
    pub cache_prefix: String,
    /// The Redis server's URL.
    pub redis_url: String,
}

impl Fixture {
    /// Stores on a fresh schema with every shipped model migrated, cached in Redis.
    pub async fn new(hint: &str) -> Fixture {
        let fixture = Fixture::without_tables(hint).await;
        fixture
            .ctx
            .stores()
            .migrate(&dataflow_models::all_models())
            .await
            .expect("migrating the shipped models");
        fixture
    }

    /// Stores on a fresh, empty schema: any query that reached PostgreSQL would fail with
    /// "relation does not exist", which proves input was rejected before a query was sent.
    pub async fn without_tables(hint: &str) -> Fixture {
        let services = Services::global().await;
        let schema = services.fresh_pg_schema(hint).await;
        let cache_prefix = services.unique_name(hint);
        let redis_url = services.redis_url().await;
        let config = Config::new(services.postgres_url().await)
            .with_schema(schema.clone())
            .with_redis(redis_url.clone())
            .with_cache_prefix(cache_prefix.clone());
        let stores = Stores::connect(&config).await.expect("connecting the stores");
        Fixture {
            ctx: Context::new(stores),
            schema,
            cache_prefix,
            redis_url,
        }
    }

    /// The context acting for `tenant`.
    pub fn tenant(&self, tenant: &str) -> Context {
        self.ctx.with_tenant(tenant).expect("a valid tenant id")
    }

    /// The pooled PostgreSQL connection (its search path is the test's schema).
    pub fn db(&self) -> &DatabaseConnection {
        self.ctx.stores().relational().connection()
    }

    /// Runs plain SQL with `$n` parameters and returns every row.
    pub async fn sql(&self, sql: &str, values: Vec<Value>) -> Vec<QueryResult> {
        self.db()
            .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
            .await
            .unwrap_or_else(|e| panic!("plain SQL failed: {sql}: {e}"))
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

/// A valid `Product` row as JSON; `i` makes the SKU unique and varies price (`i % 100 + 0.5`),
/// stock (`i`), `active` (even `i`) and category (`i % 5 + 1`).
pub fn sample_product(i: usize) -> serde_json::Value {
    serde_json::json!({"sku": format!("SKU-{i:05}"), "name": format!("Product {i}"), "description": "A sturdy tool",
           "price": (i % 100) as f64 + 0.5, "currency": "EUR", "stock": i as i64, "weight_kg": null,
           "active": i.is_multiple_of(2), "category_id": (i % 5) as i64 + 1, "manufacturer_id": null, "supplier_id": null,
           "attributes": {}})
}
