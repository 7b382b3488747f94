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
    let deleted = first.ids[0].unwrap();
    assert_eq!(
        out.errors[0].errors.0[0].message,
        format!("sku 'SKU-00001' already exists (Product {deleted}, deleted)")
    );
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

// ---------------------------------------------------------------------------------------------
// The import_catalog workflow: batches, lines, reruns.

mod workflow {
    use super::*;
    use dataflow_runtime::{RunOptions, RunReport, RunStatus, Runtime, yaml};
    use dataflow_workflows::{registry, workflow_file};
    use std::io::Write;

    /// Runs import_catalog on `path` with `extra` inputs; the runtime's default node timeout
    /// is 1 ms, which an import must not be held to.
    async fn import(fx: &Fixture, path: &std::path::Path, extra: Json) -> RunReport {
        let workflow = yaml::load_file(workflow_file("import_catalog"), &registry()).unwrap();
        let options = RunOptions {
            node_timeout: std::time::Duration::from_millis(1),
            ..RunOptions::default()
        };
        let mut inputs = json!({"path": path, "batch_size": 3});
        for (k, v) in extra.as_object().unwrap() {
            inputs[k] = v.clone();
        }
        Runtime::with_options(registry(), options).run(&workflow, &fx.ctx, inputs).await
    }

    /// A file in the system's temporary directory, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(name: &str, text: &str) -> (TempFile, std::path::PathBuf) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dataflow-import-{}-{n}-{name}", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
        (TempFile(path.clone()), path)
    }

    fn category(id: i64) -> String {
        json!({"model": "Category", "record": {"id": id, "slug": format!("cat-{id}"), "name": format!("Category {id}"), "description": "", "parent_id": null, "active": true}}).to_string()
    }

    fn product(i: usize, edit: impl FnOnce(&mut Json)) -> String {
        let mut record = sample_product(i);
        edit(&mut record);
        json!({"model": "Product", "record": record}).to_string()
    }

    /// Line numbers of the rejected lines, with the field of each.
    fn rejected(report: &RunReport) -> Vec<(u64, String)> {
        report.outputs["rejected_lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["line"].as_u64().unwrap(), r["errors"][0]["field"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// A catalogue with a byte-order mark, products before their categories in the file, and
    /// four bad lines: each bad line is reported by its line and field, every other record
    /// lands, in batches of 3; the run succeeds although the node timeout is 1 ms.
    async fn an_import_reports_each_rejected_record_by_line_and_lands_the_rest(backend: Backend) {
        let fx = Fixture::on(backend, "import_lines").await;
        let lines = [
            product(1, |p| p["category_id"] = json!(1)),   // 1
            product(2, |p| p["price"] = json!(-5)),        // 2: price below min
            product(3, |p| p["sku"] = json!("SKU-00001")), // 3: sku of line 1
            "{not json".to_owned(),                        // 4: unreadable
            product(5, |p| p["category_id"] = json!(99)),  // 5: no category 99
            product(6, |_| {}),                            // 6
            product(7, |_| {}),                            // 7
            String::new(),                                 // 8: blank, skipped
            product(9, |_| {}),                            // 9
        ]
        .into_iter()
        .chain((1..=5).map(category)) // 10-14: the categories, after the products
        .collect::<Vec<_>>()
        .join("\n");
        let (_dir, path) = file("catalog.jsonl", &format!("\u{feff}{lines}\n"));
        let report = import(&fx, &path, json!({})).await;
        assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
        assert_eq!(
            rejected(&report),
            [(2, "price".into()), (3, "sku".into()), (4, "$".into()), (5, "category_id".into())]
        );
        assert_eq!(
            report.outputs["rejected_lines"][1]["errors"][0]["message"],
            json!("the same sku as line 1"),
            "a row of the batch is named by its line"
        );
        let o = &report.outputs;
        assert_eq!(
            (o["records_read"].clone(), o["written"].clone(), o["rejected"].clone()),
            (json!(12), json!(9), json!(4))
        );
        assert_eq!(
            o["models"]["Product"],
            json!({"read": 7, "inserted": 4, "updated": 0, "rejected": 3})
        );
        assert_eq!(fx.count("categories", "").await, 5);
        assert_eq!(
            fx.count("products", "sku = 'SKU-00001'").await,
            1,
            "the first line, after the byte-order mark, landed"
        );
        assert_eq!(fx.count("products", "").await, 4);

        // The same file again, on the sku: the same lines are rejected, the rows are updated,
        // not doubled.
        let again = import(&fx, &path, json!({"on": {"Product": "sku"}})).await;
        assert_eq!(rejected(&again), rejected(&report));
        assert_eq!(again.outputs["models"]["Product"]["updated"], json!(4));
        assert_eq!(fx.count("products", "").await, 4);
    }
    on_both_backends!(an_import_reports_each_rejected_record_by_line_and_lands_the_rest);

    /// Records without ids, imported `on` their sku: an import stopped after half the file,
    /// then run whole, leaves exactly the rows of one whole run.
    async fn an_import_stopped_half_way_converges_when_run_again(backend: Backend) {
        let fx = Fixture::on(backend, "import_rerun").await;
        fx.sample_categories().await;
        let all: Vec<String> = (0..20).map(|i| product(i, |_| {})).collect();
        let (_half_dir, half) = file("half.jsonl", &all[..10].join("\n"));
        let (_dir, whole) = file("whole.jsonl", &all.join("\n"));
        let on = json!({"on": {"Product": "sku"}});
        let first = import(&fx, &half, on.clone()).await;
        assert_eq!(first.outputs["written"], json!(10), "{:?}", first.error);
        let second = import(&fx, &whole, on.clone()).await;
        assert_eq!(second.status, RunStatus::Succeeded, "{:?}", second.error);
        assert_eq!(
            second.outputs["models"]["Product"],
            json!({"read": 20, "inserted": 10, "updated": 10, "rejected": 0})
        );
        assert_eq!(fx.count("products", "").await, 20);
        assert_eq!(fx.count("products", "version = 2").await, 10);

        // Without `on`, rows without ids are new rows: the stored skus are reported, not doubled.
        let third = import(&fx, &whole, json!({})).await;
        assert_eq!(third.outputs["rejected"], json!(20));
        assert!(
            third.outputs["rejected_lines"][0]["errors"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("sku 'SKU-00000' already exists"),
            "{}",
            third.outputs["rejected_lines"][0]
        );
        assert_eq!(fx.count("products", "").await, 20);

        // A bad `on` is refused before the file is read.
        let bad = import(&fx, &whole, json!({"on": {"Product": "name"}})).await;
        assert_eq!(bad.status, RunStatus::Failed);
        assert!(
            bad.error.as_deref().unwrap().contains("'name' is not a unique field of Product"),
            "{:?}",
            bad.error
        );
    }
    on_both_backends!(an_import_stopped_half_way_converges_when_run_again);
}
