//! Imports that tell the truth: a BulkUpsert rejects the rows whose unique values are taken
//! (in the table or earlier in the input) one by one and lands the others; Create and Update
//! report a taken value as a field error; foreign keys are checked inside the write's
//! transaction, so a parent deleted meanwhile cannot leave an orphan. On the servers and on
//! the embedded set.

use dataflow_core::nodes::bulk_upsert::BulkUpsertInput;
use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::update::UpdateInput;
use dataflow_core::{Error, Node};
use dataflow_models::*;
use dataflow_tests::fixture::{Backend, Fixture, sample_product};
use dataflow_tests::on_both_backends;
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use serde_json::{Value as Json, json};

async fn bulk(fx: &Fixture, rows: Vec<Json>, on: Option<&str>) -> dataflow_core::nodes::bulk_upsert::BulkUpsertOutput {
    ProductBulkUpsertNode
        .run(
            &fx.ctx,
            BulkUpsertInput {
                rows,
                conflict_key: on.map(str::to_owned),
                batch_size: Some(4),
            },
        )
        .await
        .expect("the BulkUpsert runs; bad rows are reported, not raised")
}

async fn a_taken_unique_value_rejects_its_row_and_the_other_rows_land(backend: Backend) {
    let fx = Fixture::on(backend, "import_unique").await;
    fx.sample_categories().await;
    let first = bulk(&fx, (0..3).map(sample_product).collect(), None).await;
    assert_eq!((first.inserted, first.errors.len()), (3, 0));
    let holder = first.ids[1].unwrap();

    // Ten new rows: one repeats a stored sku, one repeats the sku of an earlier row of the
    // same input; both are reported, the eight others land.
    let mut rows: Vec<Json> = (10..20).map(sample_product).collect();
    rows[3]["sku"] = json!("SKU-00001");
    rows[7]["sku"] = json!("SKU-00012");
    let out = bulk(&fx, rows.clone(), None).await;
    assert_eq!(out.inserted, 8, "{out:?}");
    let rejected: Vec<usize> = out.errors.iter().map(|e| e.index).collect();
    assert_eq!(rejected, [3, 7]);
    assert_eq!(out.errors[0].errors.0[0].field, "sku");
    assert_eq!(
        out.errors[0].errors.0[0].message,
        format!("sku 'SKU-00001' already exists (Product {holder})")
    );
    assert_eq!(out.errors[1].errors.0[0].message, "the same sku as row 2");
    assert!(out.ids[3].is_none() && out.ids[7].is_none() && out.ids[4].is_some());
    assert_eq!(fx.count("products", "").await, 11);

    // Running the same input again converges: nothing new lands, the same rows are reported.
    let again = bulk(&fx, rows, Some("sku")).await;
    assert_eq!((again.inserted, again.updated), (0, 9), "{again:?}");
    assert_eq!(again.errors.iter().map(|e| e.index).collect::<Vec<_>>(), [7]);
    assert_eq!(fx.count("products", "").await, 11);

    // A row that keeps its own sku while updating by id is no collision; one that takes
    // another row's sku is.
    let mut own = sample_product(0);
    own["id"] = json!(first.ids[0].unwrap());
    own["stock"] = json!(77);
    let mut steal = sample_product(2);
    steal["id"] = json!(first.ids[2].unwrap());
    steal["sku"] = json!("SKU-00001");
    let out = bulk(&fx, vec![own, steal], None).await;
    assert_eq!((out.inserted, out.updated), (0, 1), "{out:?}");
    assert_eq!(out.errors[0].index, 1);
    assert!(out.errors[0].errors.to_string().contains("already exists"));
    assert_eq!(fx.count("products", "stock = 77").await, 1);
}
on_both_backends!(a_taken_unique_value_rejects_its_row_and_the_other_rows_land);

/// A deleted row still holds its unique value (the index covers it): a new row with the
/// value is reported like any taken value, not failed with the database's message.
async fn a_soft_deleted_row_still_holds_its_unique_value(backend: Backend) {
    let fx = Fixture::on(backend, "import_deleted").await;
    fx.sample_categories().await;
    let first = bulk(&fx, vec![sample_product(1)], None).await;
    fx.sql(
        "UPDATE products SET deleted_at = updated_at WHERE id = $1",
        vec![first.ids[0].unwrap().into()],
    )
    .await;
    let out = bulk(&fx, vec![sample_product(1), sample_product(2)], None).await;
    assert_eq!(out.inserted, 1, "{out:?}");
    assert_eq!(out.errors[0].index, 0);
    assert!(out.errors[0].errors.to_string().contains("sku 'SKU-00001' already exists"));
}
on_both_backends!(a_soft_deleted_row_still_holds_its_unique_value);

async fn create_and_update_report_a_taken_value_as_a_field_error(backend: Backend) {
    let fx = Fixture::on(backend, "import_create").await;
    fx.sample_categories().await;
    bulk(&fx, vec![sample_product(1), sample_product(2)], None).await;
    let record: NewProduct = serde_json::from_value(sample_product(1)).unwrap();
    let err = ProductCreateNode
        .run(&fx.ctx, CreateInput { record })
        .await
        .expect_err("the sku is taken");
    let Error::Validation { errors, .. } = &err else {
        panic!("a field error, got {err}");
    };
    assert_eq!(errors.0[0].field, "sku");
    assert_eq!(errors.0[0].message, "sku 'SKU-00001' already exists");

    let id: i64 = fx.sql("SELECT id FROM products WHERE sku = 'SKU-00002'", vec![]).await[0]
        .try_get("", "id")
        .unwrap();
    let err = ProductUpdateNode
        .run(
            &fx.ctx,
            UpdateInput::by_id(id, json!({"sku": "SKU-00001"}).as_object().unwrap().clone()),
        )
        .await
        .expect_err("the sku is taken");
    assert!(
        matches!(&err, Error::Validation { errors, .. } if errors.0[0].field == "sku"),
        "a field error, got {err}"
    );
}
on_both_backends!(create_and_update_report_a_taken_value_as_a_field_error);

/// Another writer deletes the category a new product names, and commits while the create is
/// under way: the create must see the deletion and refuse the row, never commit an orphan.
async fn a_parent_deleted_during_a_write_is_never_left_with_an_orphan(backend: Backend) {
    let fx = Fixture::on(backend, "import_orphan").await;
    fx.sample_categories().await;
    let db = fx.db().clone();
    let deleter = db.begin().await.expect("a transaction");
    deleter
        .execute_raw(Statement::from_string(
            db.get_database_backend(),
            "DELETE FROM categories WHERE id = 3",
        ))
        .await
        .expect("delete the category");
    let ctx = fx.ctx.clone();
    let create = tokio::spawn(async move {
        let mut product = sample_product(7);
        product["category_id"] = json!(3);
        let record: NewProduct = serde_json::from_value(product).unwrap();
        ProductCreateNode.run(&ctx, CreateInput { record }).await
    });
    // Let the create reach the database and wait on the deleter's lock.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    deleter.commit().await.expect("commit the delete");
    let result = create.await.expect("the create task");
    let err = result.expect_err("the category is gone");
    assert!(err.to_string().contains("names no Category 3"), "{err}");
    assert_eq!(fx.count("products", "category_id = 3").await, 0, "no orphan");
}
on_both_backends!(a_parent_deleted_during_a_write_is_never_left_with_an_orphan);
