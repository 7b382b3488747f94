//! The harness stops a server and starts it again on the same port with its data. In its own
//! test binary because it stops the PostgreSQL server that the binary's tests share.

use dataflow_core::sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use dataflow_tests::harness::probe;
use dataflow_tests::{Provider, ServiceKind, Services};

#[tokio::test]
async fn postgres_stops_and_starts_again_with_its_data() {
    let services = Services::global().await;
    if !services.can_restart() {
        return assert_eq!(services.provider(), Provider::External, "only external servers cannot be restarted");
    }
    let schema = services.fresh_pg_schema("restart").await;
    let url = services.postgres_url().await;
    let stopped_postgres = services.stop(ServiceKind::Postgres).await;
    assert!(!probe::tcp_open(probe::port_of(&url)), "the port is closed while stopped");
    stopped_postgres.start().await;
    let db = Database::connect(url.as_str()).await.expect("PostgreSQL is back");
    let found = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT COUNT(*) AS n FROM pg_namespace WHERE nspname = $1",
            [schema.into()],
        ))
        .await
        .expect("query")
        .expect("a row");
    assert_eq!(
        found.try_get::<i64>("", "n").unwrap(),
        1,
        "the schema created before the restart survived"
    );
}
