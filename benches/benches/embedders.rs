//! The two embedders side by side: what each costs and how well each classifies. Prints its
//! figures; run with `cargo bench -p dataflow-benches --bench embedders` (the `minilm` model
//! files from `scripts/install-services`, or `DATAFLOW_MODEL_DIR`).
//!
//! **Cost.** Texts embedded per second through the stores' embedding path (the one Search and
//! the vector projections take, where a model's concurrent calls are joined into one batch),
//! one text per call, from 1 caller and from 100 concurrent callers, with the sample
//! catalogue's 300 product texts, each made new by a suffix (the stores keep the sentence
//! model's recent vectors, which would make a text seen before free).
//!
//! **Quality.** On `benches/data/classification-eval.jsonl`, a labelled set of product
//! descriptions kept apart from the sample catalogue (`benches/data/check-eval-set` checks it),
//! on the embedded stores with the sample catalogue imported:
//! - top-1 accuracy of `classify_product`: the shipped workflow runs on each item and its vote
//!   is compared with the item's UNSPSC class and ETIM class; the product and classification it
//!   wrote are deleted before the next item, so no item votes for another;
//! - recall@10 of Search: of the catalogue products that carry the item's UNSPSC class, the
//!   share found among the 10 nearest (out of at most 10).
//!
//! Both are reported for all items and for those that share no content word with any product
//! of their class (`no_shared_word`), where words cannot help and only meaning can.
//! `DATAFLOW_BENCH_EMBEDDERS=hashing` (or `minilm`) measures one embedder only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflow_benches::{import_sample_catalog, reference_workflow};
use dataflow_core::{Config, Embedder, HashingEmbedder};
use dataflow_runtime::{RunStatus, Runtime, WorkflowBuilder};
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_workflows::{data_dir, registry};
use futures::StreamExt;
use serde_json::{Value, json};

/// Concurrent callers of the second cost figure.
const CALLERS: usize = 100;
/// Rounds of the sample texts each cost figure embeds (hashing is too fast to time once).
fn rounds(embedder: &dyn Embedder) -> usize {
    if embedder.joins_concurrent_calls() { 2 } else { 50 }
}

/// One labelled item of the evaluation set.
struct Item {
    product: Value,
    unspsc: String,
    etim: String,
    no_shared_word: bool,
}

fn evaluation_set() -> Vec<Item> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/classification-eval.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), n + 1));
            Item {
                product: v["product"].clone(),
                unspsc: v["unspsc"].as_str().expect("unspsc").to_owned(),
                etim: v["etim"].as_str().expect("etim").to_owned(),
                no_shared_word: v["no_shared_word"].as_bool().expect("no_shared_word"),
            }
        })
        .collect()
}

/// The sample catalogue's product texts, as the vector projection embeds them.
fn catalogue_texts() -> Vec<String> {
    let text = std::fs::read_to_string(data_dir().join("catalog.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["model"] == "Product")
        .map(|v| {
            format!(
                "{}. {}",
                v["record"]["name"].as_str().unwrap(),
                v["record"]["description"].as_str().unwrap()
            )
        })
        .collect()
}

fn main() {
    let which = std::env::var("DATAFLOW_BENCH_EMBEDDERS").unwrap_or_default();
    let mut embedders: Vec<Arc<dyn Embedder>> = Vec::new();
    if which.is_empty() || which == "hashing" {
        embedders.push(Arc::new(HashingEmbedder::default()));
    }
    if which.is_empty() || which == "minilm" {
        embedders.push(dataflow_tests::models::minilm());
    }
    assert!(
        !embedders.is_empty(),
        "DATAFLOW_BENCH_EMBEDDERS={which:?}: expected hashing or minilm"
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let items = evaluation_set();
    let unseen = items.iter().filter(|i| i.no_shared_word).count();
    println!(
        "evaluation set: {} items, {unseen} sharing no content word with their class in the catalogue",
        items.len()
    );
    rt.block_on(async {
        for embedder in &embedders {
            println!("\n== {} ({} dimensions)", embedder.name(), embedder.dimension());
            cost(embedder.clone()).await;
            quality(embedder.clone(), &items).await;
        }
    });
}

/// Texts per second through the stores' embedding path, from 1 and from 100 callers.
async fn cost(embedder: Arc<dyn Embedder>) {
    let fx =
        Fixture::with_projections_config_on(Backend::Embedded, "bench_embed_cost", |c: Config| c.with_embedder(embedder.clone())).await;
    let stores = fx.ctx.stores().clone();
    let catalogue = catalogue_texts();
    // Every text once per phase (the stores keep the sentence model's recent vectors, which
    // would make a text seen before free): the catalogue's texts, numbered by round.
    let rounds = rounds(embedder.as_ref());
    let texts = |phase: &str| -> Vec<String> {
        (0..rounds)
            .flat_map(|round| catalogue.iter().map(move |text| format!("{text} ({phase} {round})")))
            .collect()
    };
    let (alone, together) = (texts("alone"), texts("together"));
    let total = alone.len();
    // Warm: the model's first call maps its weights in.
    stores.embed(vec!["warm".to_owned()]).await.unwrap();
    let started = Instant::now();
    for text in &alone {
        stores.embed(vec![text.clone()]).await.unwrap();
    }
    let one = total as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    futures::stream::iter(together.iter())
        .map(|text| {
            let stores = stores.clone();
            async move { stores.embed(vec![text.clone()]).await.unwrap() }
        })
        .buffer_unordered(CALLERS)
        .for_each(|_| async {})
        .await;
    let many = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "embeddings/s, one text per call: 1 caller {one:9.0}   {CALLERS} callers {many:9.0}   ({total} texts of the sample catalogue, {:.1}x)",
        many / one
    );
}

/// Top-1 accuracy of classify_product and recall@10 of Search on the evaluation set.
async fn quality(embedder: Arc<dyn Embedder>, items: &[Item]) {
    let fx = Fixture::with_projections_config_on(Backend::Embedded, "bench_embed_quality", |c: Config| {
        c.with_embedder(embedder.clone())
    })
    .await;
    let runtime = Runtime::new(registry());
    let started = Instant::now();
    import_sample_catalog(&runtime, &fx).await;
    println!("import_catalog (300 products embedded): {:.2} s", started.elapsed().as_secs_f64());
    let codes = |table: &str| {
        let fx = &fx;
        let table = table.to_owned();
        async move {
            fx.sql(&format!("SELECT id, code FROM {table}"), vec![])
                .await
                .into_iter()
                .map(|r| (r.try_get::<i64>("", "id").unwrap(), r.try_get::<String>("", "code").unwrap()))
                .collect::<BTreeMap<i64, String>>()
        }
    };
    let unspsc_codes = codes("unspsc_codes").await;
    let etim_codes = codes("etim_classes").await;
    // The catalogue products of each UNSPSC code, by their imported classifications.
    let mut class_products: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for row in fx
        .sql("SELECT product_id, unspsc_id FROM classifications WHERE method = 'import'", vec![])
        .await
    {
        let unspsc: i64 = row.try_get("", "unspsc_id").unwrap();
        class_products
            .entry(unspsc_codes[&unspsc].clone())
            .or_default()
            .insert(row.try_get("", "product_id").unwrap());
    }

    let classify = reference_workflow("classify_product");
    let mut search = WorkflowBuilder::new("search_products");
    search.input("query", "string");
    search.add_node("similar", "ProductSearchNode", json!({"top_k": 10}));
    search.connect("input", "query", "similar", "query");
    search.output("hits", "similar", "hits");
    let search = search.build(&registry()).expect("the search workflow");
    let mut forget = WorkflowBuilder::new("forget_classification");
    forget.input("classification", "integer");
    forget.input("product", "integer");
    forget.add_node("classification", "ClassificationDeleteNode", json!({}));
    forget.add_node("product", "ProductDeleteNode", json!({}));
    forget.connect("input", "classification", "classification", "id");
    forget.connect("input", "product", "product", "id");
    forget.after("product", "classification");
    let forget = forget.build(&registry()).expect("the cleanup workflow");

    #[derive(Default)]
    struct Tally {
        items: usize,
        unspsc: usize,
        etim: usize,
        recall: f64,
    }
    let (mut all, mut unseen) = (Tally::default(), Tally::default());
    let mut times = Vec::with_capacity(items.len());
    for item in items {
        let t = Instant::now();
        let report = runtime.run(&classify, &fx.ctx, json!({"product": item.product})).await;
        times.push(t.elapsed());
        assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
        let vote = report.node("vote").and_then(|n| n.output.clone()).expect("the vote's output");
        let voted = |key: &str, codes: &BTreeMap<i64, String>| vote[key].as_i64().and_then(|id| codes.get(&id).cloned());
        let unspsc_right = voted("unspsc_id", &unspsc_codes).as_deref() == Some(item.unspsc.as_str());
        let etim_right = voted("etim_id", &etim_codes).as_deref() == Some(item.etim.as_str());
        let cleanup = runtime
            .run(
                &forget,
                &fx.ctx,
                json!({"classification": report.outputs["classification"]["id"], "product": report.outputs["product"]["id"]}),
            )
            .await;
        assert_eq!(cleanup.status, RunStatus::Succeeded, "{:?}", cleanup.error);

        // As classify_product searches (and as the catalogue's documents read).
        let query = format!(
            "{}\n{}",
            item.product["name"].as_str().unwrap(),
            item.product["description"].as_str().unwrap()
        );
        let found = runtime.run(&search, &fx.ctx, json!({"query": query})).await;
        assert_eq!(found.status, RunStatus::Succeeded, "{:?}", found.error);
        let relevant = class_products.get(&item.unspsc).cloned().unwrap_or_default();
        let hits: BTreeSet<i64> = found.outputs["hits"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["record"]["id"].as_i64())
            .collect();
        let recall = if relevant.is_empty() {
            0.0
        } else {
            hits.intersection(&relevant).count() as f64 / relevant.len().min(10) as f64
        };
        for tally in [Some(&mut all), item.no_shared_word.then_some(&mut unseen)].into_iter().flatten() {
            tally.items += 1;
            tally.unspsc += usize::from(unspsc_right);
            tally.etim += usize::from(etim_right);
            tally.recall += recall;
        }
    }
    for (what, tally) in [("all items", &all), ("sharing no content word", &unseen)] {
        let share = |n: usize| 100.0 * n as f64 / tally.items.max(1) as f64;
        println!(
            "{what:26} n={:4}  classify_product top-1: UNSPSC {:5.1} %  ETIM {:5.1} %   Search recall@10 {:5.1} %",
            tally.items,
            share(tally.unspsc),
            share(tally.etim),
            100.0 * tally.recall / tally.items.max(1) as f64
        );
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "classify_product, 1 client, embedded stores: p50 {:.2} ms  p95 {:.2} ms",
        ms(dataflow_benches::percentile(&times, 0.50)),
        ms(dataflow_benches::percentile(&times, 0.95))
    );
}
