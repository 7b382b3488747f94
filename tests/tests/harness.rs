//! The harness itself: every server answers and isolation names are distinct.

use dataflow_core::sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use dataflow_tests::Services;
use dataflow_tests::harness::probe;

#[tokio::test]
async fn every_server_answers() {
    let services = Services::global().await;

    let db = Database::connect(services.postgres_url().await.as_str()).await.expect("PostgreSQL");
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1 AS one"))
        .await
        .expect("SELECT 1")
        .expect("a row");
    assert_eq!(row.try_get::<i32>("", "one").unwrap(), 1);

    let client = redis::Client::open(services.redis_url().await.as_str()).expect("redis url");
    let mut con = client.get_multiplexed_async_connection().await.expect("Redis");
    let pong: String = redis::cmd("PING").query_async(&mut con).await.expect("PING");
    assert_eq!(pong, "PONG");

    let chroma = services.chroma_url().await;
    assert_eq!(probe::http_status(probe::port_of(&chroma), "/api/v2/heartbeat"), Some(200));

    let bolt = services.bolt().await;
    let (major, _) = probe::bolt_handshake(probe::port_of(&bolt.uri)).expect("the graph server speaks Bolt");
    assert_eq!(major, 4);
    assert!(!bolt.password.is_empty() && !bolt.database.is_empty());
}

#[tokio::test]
async fn unique_names_are_distinct_and_safe() {
    let services = Services::global().await;
    let a = services.unique_name("Some Test/Name");
    let b = services.unique_name("Some Test/Name");
    assert_ne!(a, b);
    assert!(
        a.len() <= 63 && a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "{a}"
    );
}
