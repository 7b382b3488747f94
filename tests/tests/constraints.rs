//! The schema says what the model says: `migrate` gives each table a `FOREIGN KEY` per
//! relation and a `CHECK` per field for the rules SQL can express, also on tables made before
//! it did (reporting the stored rows that break one); the database refuses a writer that
//! bypasses the nodes (psql on the servers, plain SQL on the embedded file); a refusal reaches
//! a node's caller as the node's own field error; and a delete treats the rows that name a
//! removed row as their relation's `on_delete` says, their projections following. On the
//! servers and on the embedded set.

use dataflow_core::nodes::create::CreateInput;
use dataflow_core::nodes::delete::DeleteInput;
use dataflow_core::nodes::read::ReadInput;
use dataflow_core::{Context, Error, Filter, Model, Node, Op};
use dataflow_models::*;
use dataflow_tests::fixture::{Backend, Fixture, sample_product};
use dataflow_tests::on_both_backends;
use serde_json::{Value as Json, json};

/// Runs `sql` as a writer that bypasses the nodes: the `psql` client on the servers (in the
/// test's schema), a statement on the test's own connection to the SQLite file when embedded.
/// Returns the client's error text, `None` when the statement succeeded.
async fn outside_write(fx: &Fixture, sql: &str) -> Option<String> {
    match fx.backend {
        Backend::Servers => {
            let script = format!("SET search_path TO \"{}\";\n{sql};\n", fx.schema);
            let out = tokio::process::Command::new("psql")
                .arg(&fx.config.database_url)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", &script])
                .output()
                .await
                .expect("running psql (installed with PostgreSQL by scripts/install-services)");
            (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
        }
        Backend::Embedded => {
            use sea_orm::ConnectionTrait;
            fx.db().execute_unprepared(sql).await.err().map(|e| e.to_string())
        }
    }
}

/// A product row inserted with plain SQL (ids from 1001, clear of the nodes' ids).
fn product_insert(id: i64, sku: &str, price: f64, currency: &str, category_id: i64) -> String {
    format!(
        "INSERT INTO products (id, sku, name, description, price, currency, stock, active, category_id, attributes) \
         VALUES ({id}, '{sku}', 'Outside product', '', {price}, '{currency}', 1, TRUE, {category_id}, '{{}}')"
    )
}

/// A Read of row `id`.
fn read_input(id: i64) -> ReadInput {
    ReadInput {
        id,
        include_deleted: false,
        required: false,
    }
}

/// PostgreSQL: how many constraints in the test's schema are not validated yet.
async fn unvalidated_constraints(fx: &Fixture) -> i64 {
    let rows = fx
        .sql(
            "SELECT COUNT(*) AS n FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
             WHERE NOT c.convalidated AND t.relnamespace = to_regnamespace(current_schema())",
            vec![],
        )
        .await;
    rows[0].try_get("", "n").expect("a count")
}

async fn create_product(ctx: &Context, i: usize, change: impl FnOnce(&mut Json)) -> Result<i64, Error> {
    let mut product = sample_product(i);
    change(&mut product);
    let record: NewProduct = serde_json::from_value(product).expect("a product");
    Ok(ProductCreateNode.run(ctx, CreateInput { record }).await?.record.id())
}

/// A writer that bypasses the nodes cannot leave an orphan or an out-of-range value: the
/// database refuses it, naming the constraint. `pattern` has no CHECK (said in the README),
/// so a value that breaks only a pattern is stored.
async fn the_database_refuses_an_outside_writer_that_breaks_a_rule(backend: Backend) {
    let fx = Fixture::on(backend, "constraints_outside").await;
    fx.sample_categories().await;
    let orphan = outside_write(&fx, &product_insert(1001, "OUT-1", 5.0, "EUR", 99_999)).await;
    let orphan = orphan.expect("a product naming no category is refused");
    assert!(orphan.to_lowercase().contains("foreign key"), "{orphan}");
    if backend == Backend::Servers {
        assert!(
            orphan.contains("products_category_id_fkey_"),
            "PostgreSQL names the constraint: {orphan}"
        );
    }
    for (sku, price, currency, constraint) in [
        ("OUT-2", -1.0, "EUR", "products_price_check_"),
        ("OUT-3", 5.0, "XXX", "products_currency_check_"),
        ("O3", 5.0, "EUR", "products_sku_check_"),
    ] {
        let refused = outside_write(&fx, &product_insert(1002, sku, price, currency, 1)).await;
        let refused = refused.unwrap_or_else(|| panic!("{sku} price {price} {currency} is refused"));
        assert!(refused.contains(constraint), "{sku}: the error names {constraint}: {refused}");
    }
    assert_eq!(fx.count("products", "id >= 1001").await, 0, "nothing was stored");
    // A lower-case sku breaks only the pattern rule, which no CHECK expresses.
    assert_eq!(outside_write(&fx, &product_insert(1003, "out-4", 5.0, "EUR", 1)).await, None);
    // Category 1 is named now: removing it is refused (restrict), also outside the nodes.
    let refused = outside_write(&fx, "DELETE FROM categories WHERE id = 1").await;
    let refused = refused.expect("a category that products name cannot be removed");
    assert!(refused.to_lowercase().contains("foreign key"), "{refused}");
    assert_eq!(fx.count("categories", "id = 1").await, 1);
}
on_both_backends!(the_database_refuses_an_outside_writer_that_breaks_a_rule);

/// The same field error whether the node or the database finds the broken reference: on
/// PostgreSQL a create leaves the category to the constraint, on SQLite the node checks.
async fn a_refused_reference_reads_as_the_nodes_field_error(backend: Backend) {
    let fx = Fixture::on(backend, "constraints_field_error").await;
    fx.sample_categories().await;
    let err = create_product(&fx.ctx, 1, |p| p["category_id"] = json!(99_999))
        .await
        .expect_err("no such category");
    match &err {
        Error::Validation { model, errors } => {
            assert_eq!(*model, "Product");
            assert_eq!(errors.0.len(), 1, "{err}");
            assert_eq!(errors.0[0].field, "category_id");
            assert_eq!(errors.0[0].message, "names no Category 99999 (IN_CATEGORY)");
        }
        other => panic!("a field error, got {other}"),
    }
    // A soft-deleted supplier satisfies the foreign key but may not be named: the node
    // checks that relation itself on both backends.
    let supplier: NewSupplier = serde_json::from_value(json!({
        "code": "SUP-00001", "name": "Gone Ltd", "email": "sales@gone.example", "country": "DE",
        "rating": 3.0, "lead_time_days": 5, "active": true
    }))
    .expect("a supplier");
    let supplier = SupplierCreateNode
        .run(&fx.ctx, CreateInput { record: supplier })
        .await
        .expect("a supplier");
    let supplier_id = supplier.record.id();
    SupplierDeleteNode
        .run(
            &fx.ctx,
            DeleteInput {
                id: Some(supplier_id),
                filter: None,
                hard: false,
            },
        )
        .await
        .expect("soft delete");
    let err = create_product(&fx.ctx, 2, |p| p["supplier_id"] = json!(supplier_id))
        .await
        .expect_err("a soft-deleted supplier cannot be named");
    assert!(err.to_string().contains(&format!("names no Supplier {supplier_id}")), "{err}");
    assert_eq!(fx.count("products", "TRUE").await, 0);
}
on_both_backends!(a_refused_reference_reads_as_the_nodes_field_error);

/// Tables made before `migrate` added constraints get them: rows that break one are
/// reported (not a blind failure); on PostgreSQL the constraint is in force for new rows
/// at once (`NOT VALID`), on SQLite the table waits; once the rows are fixed, a second
/// `migrate` completes. SQLite's rebuild keeps the rows and the AUTOINCREMENT counter.
async fn migrate_adds_constraints_to_existing_tables(backend: Backend) {
    let fx = Fixture::on(backend, "constraints_existing").await;
    fx.sample_categories().await;
    // The tables as an older `migrate` left them: no CHECK, no FOREIGN KEY.
    match backend {
        Backend::Servers => {
            for row in fx
                .sql(
                    "SELECT c.conname::text AS name, t.relname::text AS tab FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
                     WHERE c.contype IN ('c', 'f') AND t.relnamespace = to_regnamespace(current_schema())",
                    vec![],
                )
                .await
            {
                let (name, table): (String, String) = (row.try_get("", "name").unwrap(), row.try_get("", "tab").unwrap());
                fx.sql(&format!("ALTER TABLE \"{table}\" DROP CONSTRAINT \"{name}\""), vec![]).await;
            }
        }
        Backend::Embedded => {
            let old: String = fx
                .sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'products'", vec![])
                .await[0]
                .try_get("", "sql")
                .unwrap();
            let cut = old.find(", CONSTRAINT \"").expect("a migrated table declares its constraints");
            fx.sql("DROP TABLE products", vec![]).await;
            fx.sql(&format!("{})", &old[..cut]), vec![]).await;
        }
    }
    for statement in [
        product_insert(1, "OLD-1", 5.0, "EUR", 1),
        product_insert(2, "OLD-2", -3.0, "EUR", 1),
        product_insert(3, "OLD-3", 5.0, "EUR", 77),
        product_insert(9, "OLD-9", 5.0, "EUR", 1),
    ] {
        assert_eq!(outside_write(&fx, &statement).await, None, "an old table takes anything");
    }
    if backend == Backend::Servers {
        // Explicit ids leave PostgreSQL's sequence behind; a writer who gives them moves it.
        fx.sql("SELECT setval(pg_get_serial_sequence('products', 'id'), 9)", vec![]).await;
    }
    // Row 9 is gone, but its id was used: the table's counter must not hand it out again.
    fx.sql("DELETE FROM products WHERE id = 9", vec![]).await;

    let report = fx.ctx.stores().migrate(&[Product::meta()]).await.expect("the migration runs");
    let mut broken: Vec<(String, u64, Vec<i64>)> = report
        .broken
        .iter()
        .map(|b| (b.field.to_owned(), b.rows, b.examples.iter().map(|(id, _)| *id).collect()))
        .collect();
    broken.sort();
    assert_eq!(
        broken,
        [("category_id".to_owned(), 1, vec![3]), ("price".to_owned(), 1, vec![2])],
        "{report}"
    );
    let text = report.to_string();
    assert!(text.contains("Product 2 (price = -3"), "{text}");
    assert!(text.contains("Product 3 (category_id = 77)"), "{text}");
    match backend {
        Backend::Servers => {
            let refused = outside_write(&fx, &product_insert(4, "NEW-4", -1.0, "EUR", 1)).await;
            assert!(refused.is_some(), "a NOT VALID constraint refuses new rows at once");
            assert_eq!(unvalidated_constraints(&fx).await, 2, "two constraints wait for their rows");
        }
        Backend::Embedded => {
            let unchanged = outside_write(&fx, &product_insert(4, "NEW-4", -1.0, "EUR", 1)).await;
            assert_eq!(unchanged, None, "SQLite keeps the old table while rows break a constraint");
            fx.sql("DELETE FROM products WHERE id = 4", vec![]).await;
        }
    }

    fx.sql("UPDATE products SET price = 3 WHERE id = 2", vec![]).await;
    fx.sql("UPDATE products SET category_id = 2 WHERE id = 3", vec![]).await;
    let report = fx.ctx.stores().migrate(&[Product::meta()]).await.expect("the second migration");
    assert!(report.is_clean(), "{report}");
    if backend == Backend::Servers {
        assert_eq!(unvalidated_constraints(&fx).await, 0, "every constraint is validated");
    }
    assert!(
        outside_write(&fx, &product_insert(5, "NEW-5", -1.0, "EUR", 1)).await.is_some(),
        "the constraints are in force"
    );
    assert_eq!(fx.count("products", "TRUE").await, 3, "the rows are kept");
    let next = create_product(&fx.ctx, 10, |_| {}).await.expect("a new product");
    assert!(next > 9, "ids used before are not handed out again: got {next}");
    // Idempotent: nothing left to do.
    assert!(
        fx.ctx
            .stores()
            .migrate(&[Product::meta()])
            .await
            .expect("a third migration")
            .is_clean()
    );
}
on_both_backends!(migrate_adds_constraints_to_existing_tables);

/// A delete deals with the rows that name the removed rows as their relations declare, and
/// their cache, vectors and graph follow: `restrict` refuses (naming a row), `set_null`
/// clears the key, `cascade` removes the rows, across tenants. A soft delete removes nothing.
async fn a_delete_follows_on_delete(backend: Backend) {
    let fx = Fixture::with_projections_on(backend, "constraints_on_delete").await;
    fx.sample_categories().await;
    let maker: NewManufacturer = serde_json::from_value(json!({
        "name": "Bohrwerk", "country": "DE", "website": null, "description": "Drills"
    }))
    .expect("a manufacturer");
    let maker = ManufacturerCreateNode
        .run(&fx.ctx, CreateInput { record: maker })
        .await
        .expect("a manufacturer")
        .record
        .id();
    let product = create_product(&fx.ctx, 1, |p| {
        p["manufacturer_id"] = json!(maker);
        p["category_id"] = json!(1);
    })
    .await
    .expect("a product");
    let code: NewUnspscCode = serde_json::from_value(json!({"code": "27112700", "title": "Power drills", "level": "commodity"})).unwrap();
    let code = UnspscCodeCreateNode
        .run(&fx.ctx, CreateInput { record: code })
        .await
        .expect("a code")
        .record
        .id();
    let classification: NewClassification = serde_json::from_value(json!({
        "product_id": product, "unspsc_id": code, "etim_id": null, "confidence": 0.9, "method": "manual", "rationale": null
    }))
    .unwrap();
    let classification = ClassificationCreateNode
        .run(&fx.ctx, CreateInput { record: classification })
        .await
        .expect("a classification")
        .record
        .id();
    let acme = fx.tenant("acme");
    let customer: NewCustomer = serde_json::from_value(json!({
        "name": "Acme", "email": "buyer@acme.example", "segment": "industrial", "country": "DE", "credit_limit": 1000.0
    }))
    .unwrap();
    let customer = CustomerCreateNode
        .run(&acme, CreateInput { record: customer })
        .await
        .expect("a customer")
        .record
        .id();
    let project: NewProject = serde_json::from_value(json!({
        "customer_id": customer, "name": "Workshop", "description": "Tools for a workshop", "status": "active",
        "budget": null, "category_id": 2, "due_at": null
    }))
    .unwrap();
    let project = ProjectCreateNode
        .run(&acme, CreateInput { record: project })
        .await
        .expect("a project")
        .record
        .id();
    let recommendation: NewRecommendation = serde_json::from_value(json!({
        "project_id": project, "product_id": product, "score": 0.5, "rationale": "fits", "status": "proposed"
    }))
    .unwrap();
    let recommendation = RecommendationCreateNode
        .run(&acme, CreateInput { record: recommendation })
        .await
        .expect("a recommendation")
        .record
        .id();
    let delete = |id| DeleteInput {
        id: Some(id),
        filter: None,
        hard: false,
    };

    // restrict: the product names category 1.
    let err = CategoryDeleteNode.run(&fx.ctx, delete(1)).await.expect_err("restricted");
    assert!(
        err.to_string()
            .contains(&format!("Product {product} names a row to delete in 'category_id' (IN_CATEGORY)")),
        "{err}"
    );
    assert_eq!(fx.count("categories", "id = 1").await, 1);

    // set_null: the product loses its manufacturer; its version, cache and graph follow.
    let read = ProductReadNode.run(&fx.ctx, read_input(product)).await.expect("read");
    assert_eq!(
        read.record.as_ref().map(|r| r.data.manufacturer_id),
        Some(Some(maker)),
        "cached now"
    );
    let out = ManufacturerDeleteNode
        .run(&fx.ctx, delete(maker))
        .await
        .expect("delete the manufacturer");
    assert_eq!((out.deleted, out.pending.len()), (1, 0), "{out:?}");
    let read = ProductReadNode.run(&fx.ctx, read_input(product)).await.expect("read");
    let record = read.record.expect("the product stays");
    assert_eq!(
        (record.data.manufacturer_id, record.version),
        (None, 2),
        "cleared, version moved on"
    );
    let (_, edges) = fx.graph_node("Product", product).await.expect("the product's graph node");
    assert!(!edges.iter().any(|(relation, _, _)| relation == "MADE_BY"), "{edges:?}");

    // cascade, through a soft-delete model: a soft delete of the product removes nothing.
    ProductDeleteNode.run(&fx.ctx, delete(product)).await.expect("soft delete");
    assert_eq!(
        fx.count("classifications", "TRUE").await,
        1,
        "a soft delete keeps what names the row"
    );
    let out = ProductDeleteNode
        .run(
            &fx.ctx,
            DeleteInput {
                hard: true,
                ..delete(product)
            },
        )
        .await
        .expect("hard delete");
    assert_eq!((out.deleted, out.pending.len()), (1, 0), "{out:?}");
    assert_eq!(
        fx.count("classifications", "TRUE").await,
        0,
        "the classification went with its product"
    );
    assert_eq!(fx.count("recommendations", "TRUE").await, 0, "so did acme's recommendation");
    assert_eq!(fx.graph_node("Classification", classification).await, None, "its graph node too");
    assert_eq!(fx.graph_node("Recommendation", recommendation).await, None);
    let gone = RecommendationReadNode.run(&acme, read_input(recommendation)).await.expect("read");
    assert!(gone.record.is_none(), "no cached copy outlives the row");

    // set_null across tenants' own keys: the project's category is cleared.
    let out = CategoryDeleteNode
        .run(&fx.ctx, delete(2))
        .await
        .expect("category 2 is named only by the project");
    assert_eq!(out.deleted, 1);
    let project = ProjectReadNode.run(&acme, read_input(project)).await.expect("read");
    assert_eq!(project.record.expect("the project stays").data.category_id, None);
    assert_eq!(
        fx.ctx.stores().outbox().pending_count().await.expect("the backlog"),
        0,
        "every projection applied"
    );

    // A model that names itself: a subtree goes in one delete; part of one is refused,
    // naming the row left behind.
    let mut tree: Vec<i64> = Vec::new();
    for (slug, parent) in [("root", None), ("left", Some(0)), ("right", Some(0))] {
        let category: NewCategory = serde_json::from_value(json!({
            "slug": slug, "name": slug, "description": "", "parent_id": parent.map(|i: usize| tree[i]), "active": true
        }))
        .unwrap();
        tree.push(
            CategoryCreateNode
                .run(&fx.ctx, CreateInput { record: category })
                .await
                .expect("a category")
                .record
                .id(),
        );
    }
    let by_ids = |ids: &[i64]| DeleteInput {
        id: None,
        filter: Some(Filter::compare("id", Op::In, json!(ids))),
        hard: false,
    };
    let err = CategoryDeleteNode
        .run(&fx.ctx, by_ids(&tree[..2]))
        .await
        .expect_err("right still names root");
    assert!(
        err.to_string()
            .contains(&format!("Category {} names a row to delete in 'parent_id' (CHILD_OF)", tree[2])),
        "{err}"
    );
    let out = CategoryDeleteNode.run(&fx.ctx, by_ids(&tree)).await.expect("the whole subtree");
    assert_eq!(out.deleted, 3);
}
on_both_backends!(a_delete_follows_on_delete);
