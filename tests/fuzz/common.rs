//! What the three fuzz targets (`fuzz_yaml`, `fuzz_filter`, `fuzz_inputs`) share: the proptest
//! loop behind their short form (a fixed number of cases, part of `cargo test`) and long form
//! (as many cases as fit in `DATAFLOW_FUZZ_SECONDS`), a time limit per case, the seed corpus
//! folders, and generators of hostile strings and arbitrary JSON.
//!
//! Included by each target with `#[path = "../fuzz/common.rs"] mod common;`; each uses only
//! part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::{Map, Number, Value};

/// The environment variable that selects the long form: how many seconds to keep generating.
pub const SECONDS_VAR: &str = "DATAFLOW_FUZZ_SECONDS";

/// Longest a single case may take before it counts as a hang. Generous, because the short
/// form runs unoptimised on a loaded machine; real hangs (exponential alias expansion,
/// quadratic validation) take minutes.
pub const CASE_LIMIT: Duration = Duration::from_secs(20);

/// Cases per proptest runner in the long form. Each runner first replays the persisted
/// failures; the deadline is checked between runners.
const BATCH: u32 = 250;

/// One fuzz target.
pub struct Target {
    /// Its name in messages, e.g. `fuzz_yaml`.
    pub name: &'static str,
    /// The file failing seeds are saved to and replayed from (in the repository).
    pub regressions: &'static str,
    /// Cases the short form runs.
    pub short_cases: u32,
}

fn seconds() -> Option<u64> {
    let text = std::env::var(SECONDS_VAR).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SECONDS_VAR} must be a whole number of seconds, got {text:?}")),
    )
}

/// Runs `test` on values of `strategy`: `target.short_cases` of them, or, with
/// `DATAFLOW_FUZZ_SECONDS` set, batches until that many seconds have passed. A failure is
/// shrunk, its seed saved to `target.regressions`, and the test panics with the smallest
/// failing value.
pub fn fuzz<S>(target: &Target, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let long = seconds().map(Duration::from_secs);
    let batch = if long.is_some() { BATCH } else { target.short_cases };
    let started = Instant::now();
    let mut reported = started;
    let mut cases: u64 = 0;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: batch,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(target.regressions))),
            // Shrinking a hostile 100 kB document can take long; a minute finds a small one.
            max_shrink_time: 60_000,
            ..Config::default()
        });
        if let Err(failure) = runner.run(&strategy, &test) {
            panic!(
                "{}: {failure}\n({cases} cases passed before; the failing seed is saved in {})",
                target.name, target.regressions
            );
        }
        cases += u64::from(batch);
        let Some(limit) = long else { break };
        if started.elapsed() >= limit {
            break;
        }
        if reported.elapsed() >= Duration::from_secs(60) {
            reported = Instant::now();
            eprintln!("{}: {cases} cases in {:.0} s", target.name, started.elapsed().as_secs_f64());
        }
    }
    eprintln!(
        "{}: {cases} cases in {:.1} s, no failure",
        target.name,
        started.elapsed().as_secs_f64()
    );
}

/// Runs `work` on a thread of its own (with the default 2 MiB stack of spawned threads, as
/// the runtime's worker threads have) and waits at most [`CASE_LIMIT`]: a hang or a panic
/// becomes a test failure that proptest shrinks, rather than a stuck or aborted test.
pub fn in_time<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, TestCaseError> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| TestCaseError::fail(format!("cannot start a thread: {e}")))?;
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(value) => {
            let _ = handle.join();
            Ok(value)
        }
        // The thread is left running: there is no way to stop it, and the test fails anyway.
        Err(RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!("no result within {CASE_LIMIT:?}: the case hangs"))),
        Err(RecvTimeoutError::Disconnected) => {
            let reason = match handle.join() {
                Err(payload) => panic_text(payload.as_ref()),
                Ok(()) => "the case ended without a result".into(),
            };
            Err(TestCaseError::fail(format!("panicked: {reason}")))
        }
    }
}

/// The message of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<a panic without a message>".into())
}

/// The seed corpus folder of a target: `tests/fuzz/corpus/<name>`.
pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(name)
}

/// The files of a target's seed corpus, sorted by name, with their bytes.
pub fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(name);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path.file_name().expect("a file name").to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the seed corpus {} is empty", dir.display());
    files
}

/// Strings that break parsers, quoting and escaping: quotes, backslashes, line breaks, control
/// characters and NUL, YAML and filter syntax, path punctuation, bidi and zero-width
/// characters, astral-plane text.
const TRICKY: &[&str] = &[
    "",
    " ",
    "\"",
    "'",
    "''",
    "\\",
    "\\\"",
    "\n",
    "\r\n",
    "\r",
    "\t",
    "\0",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\u{feff}",
    "\u{200b}",
    "\u{202e}abc",
    "é",
    "日本語",
    "🦀",
    "𝕏",
    "a\u{301}",
    "~",
    "~0~1",
    "/",
    ".",
    "..",
    "*",
    "$",
    "$and",
    "$or",
    "$not",
    "$eq",
    "$in",
    "$bogus",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    ": ",
    "- ",
    "#",
    " #",
    "&a",
    "*a",
    "!",
    "!!str",
    "!!int",
    "%",
    "@",
    "`",
    "|",
    ">",
    "?",
    "---",
    "...",
    "<<",
    "null",
    "~",
    "true",
    "False",
    "1",
    "-1",
    "+1",
    "0x10",
    "0o17",
    "1e999",
    "-.inf",
    ".nan",
    "9223372036854775808",
    "input",
    "record",
    "record.id",
    "hits.*.record.id",
    "a.b.",
    "'; DROP TABLE products; --",
];

/// A hostile string: one of [`TRICKY`], arbitrary Unicode, an identifier-like word, a mix of
/// those, or a long repetition (up to 100,000 characters).
pub fn hostile_string() -> BoxedStrategy<String> {
    let tricky = prop::sample::select(TRICKY).prop_map(str::to_string);
    prop_oneof![
        4 => tricky.clone(),
        3 => any::<String>(),
        3 => "[a-zA-Z_][a-zA-Z0-9_-]{0,15}",
        2 => prop::collection::vec(prop_oneof![tricky.clone(), "[a-z]{1,4}".boxed()], 1..6).prop_map(|parts| parts.concat()),
        1 => (tricky, 1_000usize..100_000).prop_map(|(s, n)| {
            let unit = if s.is_empty() { "x".to_string() } else { s };
            unit.repeat(n / unit.len().max(1))
        }),
    ]
    .boxed()
}

/// A JSON number: small and edge-case integers, integers past `i64`, and finite floats.
pub fn json_number() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (-3i64..20).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, i64::from(i32::MAX) + 1, i64::from(u32::MAX) + 1, -1]).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        2 => any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        1 => prop::sample::select(vec![0.5, -0.0, 1.0, 1e300, -1e-300, 2.5e15]).prop_map(Value::from),
    ]
    .boxed()
}

/// Arbitrary JSON up to `depth` levels, object keys drawn from `keys`.
pub fn json(keys: BoxedStrategy<String>, depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

/// A JSON value nested `depth` levels deep: arrays, or objects under `key`. Built without
/// recursion; drop it with [`drop_deep`], since dropping a very deep value recursively
/// overflows the stack by itself.
pub fn deep_value(depth: usize, key: Option<&str>, leaf: Value) -> Value {
    let mut value = leaf;
    for _ in 0..depth {
        value = match key {
            Some(k) => Value::Object(Map::from_iter([(k.to_string(), value)])),
            None => Value::Array(vec![value]),
        };
    }
    value
}

/// Drops a value of any depth without recursing.
pub fn drop_deep(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}
