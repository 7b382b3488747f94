//! Fuzz target: the declarative workflow loader (`dataflow_runtime::yaml::load_str` and
//! `load_file`) with the registry of every shipped node.
//!
//! Inputs, structure-aware: the shipped workflows (`workflows/*.yaml`) and the seed corpus in
//! `tests/fuzz/corpus/yaml`, parsed, mutated as data (keys deleted, replaced, renamed and
//! duplicated, node types swapped, random field paths in connections and outputs, random
//! strings with quotes, line breaks, Unicode or 100,000 characters, deep nesting) and written
//! back as YAML in a random mix of block and flow styles and quoting; the same files mutated
//! as text (lines deleted, duplicated, swapped and re-indented, YAML tokens inserted, cut
//! short); alias bombs ("billion laughs"); nesting thousands of levels deep; YAML token soup;
//! arbitrary text; and arbitrary bytes or invalid UTF-8 through `load_file`.
//!
//! Properties: the loader never panics and answers within the per-case limit; every error
//! names the file, and the line and column wherever the input has a position; data written
//! out faithfully reads back as the same data, and loads exactly when the same definition
//! builds; a duplicated key is always an error; a loaded workflow builds again from its
//! definition, and written out and loaded again gives the same definition.
//!
//! Short form: part of `cargo test`. Long form:
//! `DATAFLOW_FUZZ_SECONDS=600 cargo test --release -p dataflow-tests --test fuzz_yaml`.
//! Failing seeds are kept in `tests/proptest-regressions/fuzz_yaml.txt` and replayed first.

#[path = "../fuzz/common.rs"]
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use common::{Target, corpus, corpus_dir, fuzz, hostile_string, in_time, json};
use dataflow_runtime::yaml::{self, Diagnostics};
use dataflow_runtime::{Registry, Workflow, WorkflowDef};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value};

const TARGET: Target = Target {
    name: "fuzz_yaml",
    regressions: concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz_yaml.txt"),
    short_cases: 800,
};

/// The name text cases are loaded under.
const FILE: &str = "fuzz/case.yaml";

static REGISTRY: LazyLock<Registry> = LazyLock::new(dataflow_workflows::registry);

/// Seed documents: the shipped workflows, then the corpus files that are UTF-8.
static SEEDS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let mut seeds: Vec<(String, String)> = dataflow_workflows::REFERENCE_WORKFLOWS
        .iter()
        .map(|name| {
            let path = dataflow_workflows::workflow_file(name);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (format!("{name}.yaml"), text)
        })
        .collect();
    seeds.extend(
        corpus("yaml")
            .into_iter()
            .filter_map(|(name, bytes)| String::from_utf8(bytes).ok().map(|text| (name, text))),
    );
    seeds
});

/// The seeds that parse, as data, for the structure-aware mutations.
static TREES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    SEEDS
        .iter()
        .filter(|(_, text)| text.len() < 100_000)
        .filter_map(|(_, text)| yaml::parse(text).ok().map(|doc| doc.value))
        .filter(Value::is_object)
        .collect()
});

/// Words a field path is made of: the top-level input and output fields of every node type.
static FIELDS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut fields: Vec<String> = REGISTRY
        .names()
        .filter_map(|name| REGISTRY.schemas(name))
        .flat_map(|(input, output)| [input, output])
        .flat_map(|schema| {
            let mut names: Vec<String> = Vec::new();
            collect_properties(&schema, &mut names);
            names
        })
        .collect();
    fields.sort();
    fields.dedup();
    fields
});

fn collect_properties(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                out.extend(props.keys().cloned());
            }
            map.values().for_each(|v| collect_properties(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_properties(v, out)),
        _ => {}
    }
}

static NODE_TYPES: LazyLock<Vec<String>> = LazyLock::new(|| REGISTRY.names().map(str::to_string).collect());

// ---------------------------------------------------------------------------------------------
// Writing data as YAML

/// A small deterministic generator for the writer's style choices, seeded by the case.
struct Dice(u64);

impl Dice {
    fn roll(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.roll().is_multiple_of(n)
    }
}

/// Writes a JSON value as YAML that reads back as the same value, choosing block or flow
/// collections, compact or spread sequences, indentation and the quoting of each string by
/// dice; optionally writes the first key of the `duplicate`-th mapping twice.
struct Writer {
    out: String,
    dice: Dice,
    step: usize,
    maps: usize,
    duplicate: Option<usize>,
    /// The key written twice, once it has been.
    duplicated: Option<String>,
}

impl Writer {
    fn document(value: &Value, seed: u64, duplicate: Option<usize>) -> (String, Option<String>) {
        let mut w = Writer {
            out: String::new(),
            dice: Dice(seed | 1),
            step: 0,
            maps: 0,
            duplicate,
            duplicated: None,
        };
        w.step = 1 + (w.dice.roll() % 4) as usize;
        if w.dice.one_in(4) {
            w.out.push_str("# a comment\n");
        }
        if w.dice.one_in(3) {
            w.out.push_str("---\n");
        }
        match value {
            Value::Object(map) if !map.is_empty() && !w.dice.one_in(8) => w.block_map(map, 0, false),
            Value::Array(items) if !items.is_empty() && !w.dice.one_in(8) => w.block_seq(items, 0),
            other => {
                w.flow(other);
                w.out.push('\n');
            }
        }
        if w.dice.one_in(5) {
            w.out.push_str("...\n");
        }
        (w.out, w.duplicated)
    }

    fn pad(&mut self, indent: usize) {
        self.out.extend(std::iter::repeat_n(' ', indent));
    }

    /// A mapping in block style at `indent`; with `inline`, its first key continues the
    /// current line (after `- `).
    fn block_map(&mut self, map: &Map<String, Value>, indent: usize, inline: bool) {
        let this = self.maps;
        self.maps += 1;
        for (i, (key, value)) in map.iter().enumerate() {
            let twice = i == 0 && self.duplicate == Some(this);
            for copy in 0..if twice { 2 } else { 1 } {
                if i > 0 || copy > 0 || !inline {
                    self.pad(indent);
                }
                if self.key(key) {
                    // An explicit key: its value follows on a line of its own.
                    self.out.push('\n');
                    self.pad(indent);
                }
                self.out.push(':');
                self.block_value(value, indent, true);
            }
            if twice {
                self.duplicated = Some(key.clone());
            }
        }
    }

    fn block_seq(&mut self, items: &[Value], indent: usize) {
        for item in items {
            self.pad(indent);
            self.out.push('-');
            match item {
                Value::Object(map) if !map.is_empty() && self.dice.one_in(2) => {
                    self.out.push(' ');
                    self.block_map(map, indent + 2, true);
                }
                _ => self.block_value(item, indent, false),
            }
        }
    }

    /// The value after `key:` (`under_key`) or `-` at `indent`.
    fn block_value(&mut self, value: &Value, indent: usize, under_key: bool) {
        match value {
            Value::Object(map) if !map.is_empty() && !self.dice.one_in(3) => {
                self.out.push('\n');
                self.block_map(map, indent + self.step, false);
            }
            Value::Array(items) if !items.is_empty() && !self.dice.one_in(3) => {
                self.out.push('\n');
                // A sequence under a key may sit at the key's own indentation.
                let inner = if under_key && self.dice.one_in(2) {
                    indent
                } else {
                    indent + self.step
                };
                self.block_seq(items, inner);
            }
            other => {
                self.out.push(' ');
                self.flow(other);
                self.out.push('\n');
            }
        }
    }

    fn flow(&mut self, value: &Value) {
        match value {
            Value::Null => self.out.push_str(if self.dice.one_in(2) { "null" } else { "~" }),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                let _ = write!(self.out, "{n}");
            }
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.flow(item);
                }
                self.out.push(']');
            }
            Value::Object(map) => {
                let this = self.maps;
                self.maps += 1;
                self.out.push('{');
                for (i, (key, value)) in map.iter().enumerate() {
                    let twice = i == 0 && self.duplicate == Some(this);
                    for copy in 0..if twice { 2 } else { 1 } {
                        if i > 0 || copy > 0 {
                            self.out.push_str(", ");
                        }
                        self.key(key);
                        self.out.push_str(": ");
                        self.flow(value);
                    }
                    if twice {
                        self.duplicated = Some(key.clone());
                    }
                }
                self.out.push('}');
            }
        }
    }

    /// A mapping key; one written longer than YAML allows an implicit key (1,024 characters)
    /// is made explicit with `? `, and then true is returned.
    fn key(&mut self, key: &str) -> bool {
        let start = self.out.len();
        self.string(key);
        let explicit = self.out[start..].chars().count() > 1_000;
        if explicit {
            self.out.insert_str(start, "? ");
        }
        explicit
    }

    /// A string as a plain, single-quoted or double-quoted scalar, whichever the dice pick
    /// among those that hold it exactly.
    fn string(&mut self, s: &str) {
        let plain = is_plain(s);
        let single = s.chars().all(|c| (c == ' ' || !c.is_control()) && !is_special(c));
        match self.dice.roll() % 3 {
            0 if plain => self.out.push_str(s),
            1 if single => {
                self.out.push('\'');
                self.out.push_str(&s.replace('\'', "''"));
                self.out.push('\'');
            }
            _ => {
                self.out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => self.out.push_str("\\\""),
                        '\\' => self.out.push_str("\\\\"),
                        '\n' => self.out.push_str("\\n"),
                        '\t' => self.out.push_str("\\t"),
                        c if c.is_control() || is_special(c) => {
                            let _ = if u32::from(c) <= 0xffff {
                                write!(self.out, "\\u{:04x}", u32::from(c))
                            } else {
                                write!(self.out, "\\U{:08x}", u32::from(c))
                            };
                        }
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
        }
    }
}

/// Characters written escaped: line and paragraph separators, the byte-order mark and
/// noncharacters, which YAML treats specially or not as printable.
fn is_special(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

/// Whether `s` reads back as the same string when written without quotes.
fn is_plain(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$' | '*'))
        && !matches!(s, "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
}

/// The loader's nesting limit (`yaml::MAX_DEPTH`, private): values at this depth load.
const MAX_DEPTH: usize = 64;

/// How deep the deepest value inside `value` is, `value` itself at 0.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(|v| 1 + depth(v)).max().unwrap_or(0),
        Value::Object(map) => map.values().map(|v| 1 + depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether the loader can hold every number of `value` (it reads integers into `i64`).
fn representable(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_i64() || n.is_f64(),
        Value::Array(items) => items.iter().all(representable),
        Value::Object(map) => map.values().all(representable),
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations of data

/// A node type to put in a definition.
#[derive(Debug, Clone)]
enum TypeName {
    Registered(Index),
    /// A registered name with one character dropped.
    Typo(Index, Index),
    Other(String),
}

impl TypeName {
    fn resolve(&self) -> String {
        match self {
            TypeName::Registered(i) => i.get(&NODE_TYPES).clone(),
            TypeName::Typo(i, at) => {
                let mut chars: Vec<char> = i.get(&NODE_TYPES).chars().collect();
                chars.remove(at.index(chars.len()));
                chars.into_iter().collect()
            }
            TypeName::Other(s) => s.clone(),
        }
    }
}

/// One segment of a generated field path.
#[derive(Debug, Clone)]
enum Segment {
    /// A node of the definition (or `input`).
    Node(Index),
    /// A field of some node type.
    Field(Index),
    Star,
    Position(u8),
    Other(String),
}

fn segment() -> BoxedStrategy<Segment> {
    prop_oneof![
        3 => any::<Index>().prop_map(Segment::Node),
        5 => any::<Index>().prop_map(Segment::Field),
        1 => Just(Segment::Star),
        1 => any::<u8>().prop_map(Segment::Position),
        1 => hostile_string().prop_map(Segment::Other),
    ]
    .boxed()
}

fn path_text(segments: &[Segment], nodes: &[String]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Node(_) if nodes.is_empty() => "input".to_string(),
            Segment::Node(i) => i.get(nodes).clone(),
            Segment::Field(i) => i.get(&FIELDS).clone(),
            Segment::Star => "*".into(),
            Segment::Position(n) => n.to_string(),
            Segment::Other(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Removes an entry (a key of a mapping or an item of a sequence).
    Delete(Index),
    Replace(Index, Value),
    RenameKey(Index, String),
    /// Copies an entry: an item is repeated, a key's value appears under a second key.
    Duplicate(Index),
    SetType(Index, TypeName),
    /// Points a connection end or an output somewhere.
    SetPath(Index, Vec<Segment>),
    AddNode(String, TypeName, Value),
    AddConnection(Vec<Segment>, Vec<Segment>),
    /// Wraps a value in mappings or sequences, `levels` deep.
    Nest(Index, usize, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let type_name = prop_oneof![
        6 => any::<Index>().prop_map(TypeName::Registered),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, at)| TypeName::Typo(i, at)),
        1 => hostile_string().prop_map(TypeName::Other),
    ];
    let path = prop::collection::vec(segment(), 1..5);
    let value = json(
        prop_oneof![4 => prop::sample::select(FIELDS.clone()).boxed(), 1 => hostile_string()].boxed(),
        3,
    );
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::Delete),
        3 => (any::<Index>(), value.clone()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => (any::<Index>(), hostile_string()).prop_map(|(i, k)| Mutation::RenameKey(i, k)),
        2 => any::<Index>().prop_map(Mutation::Duplicate),
        3 => (any::<Index>(), type_name.clone()).prop_map(|(i, t)| Mutation::SetType(i, t)),
        4 => (any::<Index>(), path.clone()).prop_map(|(i, p)| Mutation::SetPath(i, p)),
        2 => ("[a-z][a-z0-9_]{0,8}", type_name, value).prop_map(|(n, t, v)| Mutation::AddNode(n, t, v)),
        3 => (path.clone(), path).prop_map(|(f, t)| Mutation::AddConnection(f, t)),
        1 => (any::<Index>(), 1usize..100, any::<bool>()).prop_map(|(i, n, m)| Mutation::Nest(i, n, m)),
    ]
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of every value in `value`, the root first.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            out.push(at.clone());
            for (k, v) in map {
                pointers(v, format!("{at}/{}", escape(k)), out);
            }
        }
        Value::Array(items) => {
            out.push(at.clone());
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The parent of a non-root pointer and the last token.
fn split_pointer(pointer: &str) -> Option<(String, String)> {
    let cut = pointer.rfind('/')?;
    Some((pointer[..cut].to_string(), unescape(&pointer[cut + 1..])))
}

fn node_names(tree: &Value) -> Vec<String> {
    let mut names: Vec<String> = tree
        .get("nodes")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.push("input".into());
    names
}

fn apply(tree: &mut Value, mutation: &Mutation) {
    let mut all = Vec::new();
    pointers(tree, String::new(), &mut all);
    let pick = |i: &Index| i.get(&all).clone();
    match mutation {
        Mutation::Delete(i) => {
            let Some((parent, last)) = split_pointer(&pick(i)) else { return };
            match tree.pointer_mut(&parent) {
                Some(Value::Object(map)) => {
                    map.remove(&last);
                }
                Some(Value::Array(items)) => {
                    if let Ok(n) = last.parse::<usize>()
                        && n < items.len()
                    {
                        items.remove(n);
                    }
                }
                _ => {}
            }
        }
        Mutation::Replace(i, v) => {
            if let Some(slot) = tree.pointer_mut(&pick(i)) {
                *slot = v.clone();
            }
        }
        Mutation::RenameKey(i, key) => {
            let Some((parent, last)) = split_pointer(&pick(i)) else { return };
            if let Some(Value::Object(map)) = tree.pointer_mut(&parent)
                && let Some(v) = map.remove(&last)
            {
                map.insert(key.clone(), v);
            }
        }
        Mutation::Duplicate(i) => {
            let Some((parent, last)) = split_pointer(&pick(i)) else { return };
            match tree.pointer_mut(&parent) {
                Some(Value::Object(map)) => {
                    if let Some(v) = map.get(&last).cloned() {
                        map.insert(format!("{last}2"), v);
                    }
                }
                Some(Value::Array(items)) => {
                    if let Some(v) = last.parse::<usize>().ok().and_then(|n| items.get(n).cloned()) {
                        items.push(v);
                    }
                }
                _ => {}
            }
        }
        Mutation::SetType(i, name) => {
            let nodes: Vec<String> = node_names(tree).into_iter().filter(|n| n != "input").collect();
            if nodes.is_empty() {
                return;
            }
            let node = i.get(&nodes).clone();
            if let Some(Value::Object(def)) = tree.pointer_mut(&format!("/nodes/{}", escape(&node))) {
                def.insert("type".into(), Value::String(name.resolve()));
            }
        }
        Mutation::SetPath(i, segments) => {
            let text = path_text(segments, &node_names(tree));
            let mut ends: Vec<String> = Vec::new();
            if let Some(conns) = tree.get("connections").and_then(Value::as_array) {
                for k in 0..conns.len() {
                    ends.push(format!("/connections/{k}/from"));
                    ends.push(format!("/connections/{k}/to"));
                }
            }
            if let Some(outputs) = tree.get("outputs").and_then(Value::as_object) {
                ends.extend(outputs.keys().map(|k| format!("/outputs/{}", escape(k))));
            }
            if ends.is_empty() {
                return;
            }
            let end = i.get(&ends).clone();
            if let Some(slot) = tree.pointer_mut(&end) {
                *slot = Value::String(text);
            }
        }
        Mutation::AddNode(name, ty, params) => {
            if let Some(Value::Object(nodes)) = tree.get_mut("nodes") {
                let mut def = Map::new();
                def.insert("type".into(), Value::String(ty.resolve()));
                if !params.is_null() {
                    def.insert("params".into(), params.clone());
                }
                nodes.insert(name.clone(), Value::Object(def));
            }
        }
        Mutation::AddConnection(from, to) => {
            let names = node_names(tree);
            let connection = serde_json::json!({"from": path_text(from, &names), "to": path_text(to, &names)});
            match tree.get_mut("connections") {
                Some(Value::Array(items)) => items.push(connection),
                _ => {
                    if let Value::Object(map) = tree {
                        map.insert("connections".into(), Value::Array(vec![connection]));
                    }
                }
            }
        }
        Mutation::Nest(i, levels, mapping) => {
            if let Some(slot) = tree.pointer_mut(&pick(i)) {
                let mut v = slot.take();
                for _ in 0..*levels {
                    v = if *mapping {
                        Value::Object(Map::from_iter([("x".to_string(), v)]))
                    } else {
                        Value::Array(vec![v])
                    };
                }
                *slot = v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations of text

const TOKENS: &[&str] = &[
    "- ",
    ": ",
    ":",
    "\n",
    "  ",
    "    ",
    "\t",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!int ",
    "!!map ",
    "!custom ",
    "!<tag:yaml.org,2002:str> ",
    "? ",
    "|\n",
    "|-\n",
    ">\n",
    ">+\n",
    "'",
    "\"",
    "# c",
    "---\n",
    "...\n",
    "%YAML 1.2\n---\n",
    "%TAG ! tag:x,2002:\n---\n",
    "<<: *a\n",
    "\u{feff}",
    "\r",
    "\r\n",
    "@",
    "`",
    "%",
    "~",
    "null",
    "1e5",
    "-1",
    "0x1F",
    ".inf",
    "type: ",
    "params: ",
    "nodes:\n",
    "connections:\n",
    "- {from: a.b, to: c.d}\n",
    "\\",
    "\0",
    "\u{85}",
];

#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    Indent(Index, u8, bool),
    Insert(Index, String),
    Replace(Index, u8, String),
    Truncate(Index),
    Crlf,
    Tabs,
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop_oneof![3 => prop::sample::select(TOKENS).prop_map(str::to_string), 1 => hostile_string()];
    prop_oneof![
        2 => any::<Index>().prop_map(Edit::DeleteLine),
        2 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        2 => (any::<Index>(), 1u8..5, any::<bool>()).prop_map(|(i, n, more)| Edit::Indent(i, n, more)),
        4 => (any::<Index>(), token.clone()).prop_map(|(i, t)| Edit::Insert(i, t)),
        2 => (any::<Index>(), any::<u8>(), token).prop_map(|(i, n, t)| Edit::Replace(i, n, t)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => Just(Edit::Crlf),
        1 => Just(Edit::Tabs),
    ]
}

/// A character boundary of `text` picked by `i`.
fn boundary(text: &str, i: &Index) -> usize {
    let bounds: Vec<usize> = text.char_indices().map(|(b, _)| b).chain([text.len()]).collect();
    *i.get(&bounds)
}

fn apply_edit(text: &mut String, edit: &Edit) {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    match edit {
        Edit::DeleteLine(i) => {
            lines.remove(i.index(lines.len()));
        }
        Edit::DuplicateLine(i) => {
            let n = i.index(lines.len());
            lines.insert(n, lines[n].clone());
        }
        Edit::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
        }
        Edit::Indent(i, n, more) => {
            let at = i.index(lines.len());
            let line = &mut lines[at];
            if *more {
                line.insert_str(0, &" ".repeat(usize::from(*n)));
            } else {
                let spaces = line.chars().take_while(|c| *c == ' ').count().min(usize::from(*n));
                line.drain(..spaces);
            }
        }
        Edit::Insert(i, token) => {
            let at = boundary(text, i);
            text.insert_str(at, token);
            return;
        }
        Edit::Replace(i, n, token) => {
            let at = boundary(text, i);
            let end = text[at..].char_indices().nth(usize::from(*n)).map_or(text.len(), |(b, _)| at + b);
            text.replace_range(at..end, token);
            return;
        }
        Edit::Truncate(i) => {
            let at = boundary(text, i);
            text.truncate(at);
            return;
        }
        Edit::Crlf => {
            *text = text.replace('\n', "\r\n");
            return;
        }
        Edit::Tabs => {
            *text = text.replace("  ", "\t");
            return;
        }
    }
    *text = lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Cases

/// How a deep document nests.
#[derive(Debug, Clone, Copy)]
enum Nesting {
    FlowSeq,
    FlowMap,
    BlockMap,
    BlockSeq,
    /// Inside a node's params, so the rest of the file is a real workflow.
    InParams,
}

#[derive(Debug, Clone)]
enum Case {
    /// A seed's data, mutated, written by [`Writer`] with `seed` for its style.
    Data {
        tree: usize,
        mutations: Vec<Mutation>,
        seed: u64,
        duplicate: Option<usize>,
    },
    /// A seed's text, edited.
    Text {
        seed: usize,
        edits: Vec<Edit>,
    },
    /// Anchored lists `width` long, each level aliasing the last `width` times.
    Bomb {
        levels: usize,
        width: usize,
        in_workflow: bool,
    },
    Deep(Nesting, usize),
    /// Any text.
    Raw(String),
    /// Bytes through `load_file`: arbitrary, or a seed with bytes that are not UTF-8.
    Bytes(Vec<u8>),
    SeedBytes {
        seed: usize,
        at: Index,
        bad: Vec<u8>,
    },
}

fn cases() -> impl Strategy<Value = Case> {
    let trees = TREES.len();
    let seeds = SEEDS.len();
    let soup = prop::collection::vec(
        prop_oneof![4 => prop::sample::select(TOKENS).prop_map(str::to_string), 1 => hostile_string(), 2 => "[a-z_]{1,8}"],
        0..200,
    )
    .prop_map(|parts| parts.concat());
    let bad_utf8 = prop_oneof![
        Just(vec![0xff]),
        Just(vec![0xc3]),
        Just(vec![0xc0, 0x80]),
        Just(vec![0xed, 0xa0, 0x80]),
        Just(vec![0xf4, 0x90, 0x80, 0x80]),
        Just(vec![0xe2, 0x82]),
        prop::collection::vec(0x80u8..=0xff, 1..4),
    ];
    let nesting = prop_oneof![
        Just(Nesting::FlowSeq),
        Just(Nesting::FlowMap),
        Just(Nesting::BlockMap),
        Just(Nesting::BlockSeq),
        Just(Nesting::InParams),
    ];
    prop_oneof![
        10 => (0..trees, prop::collection::vec(mutation(), 0..5), any::<u64>(), prop::option::weighted(0.1, 0usize..20))
            .prop_map(|(tree, mutations, seed, duplicate)| Case::Data { tree, mutations, seed, duplicate }),
        6 => (0..seeds, prop::collection::vec(edit(), 1..5)).prop_map(|(seed, edits)| Case::Text { seed, edits }),
        1 => (1usize..12, 1usize..12, any::<bool>()).prop_map(|(levels, width, in_workflow)| Case::Bomb { levels, width, in_workflow }),
        1 => (nesting, prop_oneof![1usize..80, 1usize..5_000]).prop_map(|(n, d)| Case::Deep(n, d)),
        2 => soup.prop_map(Case::Raw),
        1 => any::<String>().prop_map(Case::Raw),
        1 => prop::collection::vec(any::<u8>(), 0..2_000).prop_map(Case::Bytes),
        1 => (0..seeds, any::<Index>(), bad_utf8).prop_map(|(seed, at, bad)| Case::SeedBytes { seed, at, bad }),
    ]
}

/// A minimal valid workflow around `params` (written at six spaces).
fn workflow_with_params(params: &str) -> String {
    format!("name: fuzz\nnodes:\n  t:\n    type: Transform\n    params:\n{params}")
}

fn bomb(levels: usize, width: usize, in_workflow: bool) -> String {
    let indent = if in_workflow { "      " } else { "" };
    let mut text = format!("{indent}l0: &l0 [{}]\n", vec!["lol"; width].join(", "));
    for level in 1..levels {
        let refs = vec![format!("*l{}", level - 1); width].join(", ");
        let _ = writeln!(text, "{indent}l{level}: &l{level} [{refs}]");
    }
    if in_workflow { workflow_with_params(&text) } else { text }
}

fn deep(nesting: Nesting, depth: usize) -> String {
    match nesting {
        Nesting::FlowSeq => format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
        Nesting::FlowMap => format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
        // Block nesting costs its depth in indentation on every line: kept to a few hundred.
        Nesting::BlockMap => {
            (0..depth.min(400)).map(|d| format!("{}a:\n", " ".repeat(d))).collect::<String>() + &" ".repeat(depth.min(400)) + "1\n"
        }
        Nesting::BlockSeq => format!("{}1\n", "- ".repeat(depth)),
        Nesting::InParams => workflow_with_params(&format!("      select: {}x{}\n", "[".repeat(depth), "]".repeat(depth))),
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// Messages of errors that have no place in the file: it could not be read at all, or the
/// document as a whole (not any key of it) is wrong.
fn positionless(message: &str) -> bool {
    message.starts_with("not UTF-8")
        || message.starts_with("cannot read")
        || message.starts_with("larger than")
        || message == "unexpected end of input"
        || message.ends_with("expected struct WorkflowDef")
}

/// Every diagnostic names `file`, and its line and column wherever the input has them, and
/// the line shown is the line named.
fn check_diagnostics(text: &str, file: &Path, diagnostics: &Diagnostics) -> Result<(), TestCaseError> {
    if diagnostics.0.is_empty() {
        return Err(fail("an error without a diagnostic".into()));
    }
    // Lines as YAML counts them: a lone CR ends one too.
    let lines = text.split('\n').flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r')).count();
    let shown_file = file.display().to_string();
    for d in &diagnostics.0 {
        let shown = d.to_string();
        if d.file != file {
            return Err(fail(format!("names the file {} instead of {shown_file}", d.file.display())));
        }
        if d.message.trim().is_empty() {
            return Err(fail(format!("an empty message: {shown}")));
        }
        match d.position {
            Some(p) => {
                if p.line == 0 || p.column == 0 || p.line > lines + 1 {
                    return Err(fail(format!("position {p:?} is outside a {lines}-line file: {shown}")));
                }
                let head = format!("{shown_file}:{}:{}: ", p.line, p.column);
                if !shown.starts_with(&head) {
                    return Err(fail(format!("does not start with {head:?}: {shown}")));
                }
                if p.line <= lines && d.source_line.is_none() {
                    return Err(fail(format!("line {} is not shown: {shown}", p.line)));
                }
            }
            None => {
                if !shown.starts_with(&format!("{shown_file}: ")) {
                    return Err(fail(format!("does not start with the file name: {shown}")));
                }
                if !d.pointer.is_empty() || !positionless(&d.message) {
                    return Err(fail(format!("no line and column for {:?}: {shown}", d.pointer)));
                }
            }
        }
    }
    Ok(())
}

/// The definition with its nodes sorted by name, to compare definitions written in different
/// orders.
fn sorted(def: &WorkflowDef) -> WorkflowDef {
    let mut def = def.clone();
    def.nodes.sort_by(|a, b| a.0.cmp(&b.0));
    def
}

/// A loaded workflow builds again from its definition, and its definition written as YAML
/// loads as the same definition.
fn check_loaded(workflow: &Workflow, seed: u64) -> Result<(), TestCaseError> {
    if let Err(problems) = Workflow::build(workflow.def().clone(), &REGISTRY) {
        return Err(fail(format!("loaded, but its definition does not build again: {problems}")));
    }
    let data = serde_json::to_value(workflow.def()).map_err(|e| fail(format!("the definition does not serialise: {e}")))?;
    let (text, _) = Writer::document(&data, seed, None);
    match yaml::load_str(&text, FILE, &REGISTRY) {
        Ok(again) if sorted(again.def()) == sorted(workflow.def()) => Ok(()),
        Ok(again) => Err(fail(format!(
            "written out and loaded again, the definition changed:\n{text}\n{:?}\n{:?}",
            workflow.def(),
            again.def()
        ))),
        Err(e) => Err(fail(format!("written out, it does not load again:\n{text}\n{e}"))),
    }
}

fn check_text(text: &str, seed: u64) -> Result<(), TestCaseError> {
    match yaml::load_str(text, FILE, &REGISTRY) {
        Ok(workflow) => check_loaded(&workflow, seed),
        Err(diagnostics) => check_diagnostics(text, Path::new(FILE), &diagnostics),
    }
}

/// Loads `bytes` from a file of their own.
fn check_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    thread_local! {
        static FILE_PATH: PathBuf = {
            let dir = std::env::temp_dir().join(format!("dataflow-fuzz-yaml-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            dir.join(format!("{:?}.yaml", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_"))
        };
    }
    let path = FILE_PATH.with(Clone::clone);
    std::fs::write(&path, bytes).map_err(|e| fail(format!("writing {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(bytes).into_owned();
    let result = yaml::load_file(&path, &REGISTRY);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(workflow) => check_loaded(&workflow, 7),
        Err(diagnostics) => {
            if std::str::from_utf8(bytes).is_err() && !diagnostics.0.iter().any(|d| d.message.starts_with("not UTF-8")) {
                return Err(fail(format!("bytes that are not UTF-8 gave: {diagnostics}")));
            }
            check_diagnostics(&text, &path, &diagnostics)
        }
    }
}

fn check_data(tree: &Value, mutations: &[Mutation], seed: u64, duplicate: Option<usize>) -> Result<(), TestCaseError> {
    let mut tree = tree.clone();
    for m in mutations {
        apply(&mut tree, m);
    }
    let (text, duplicated) = Writer::document(&tree, seed, duplicate);
    let result = yaml::load_str(&text, FILE, &REGISTRY);
    if let Some(key) = duplicated {
        let Err(diagnostics) = &result else {
            return Err(fail(format!("the key {key:?} twice in one mapping was accepted:\n{text}")));
        };
        // Unless the parser stopped at another problem first.
        let parses_otherwise = representable(&tree) && depth(&tree) <= MAX_DEPTH;
        if parses_otherwise
            && !diagnostics
                .0
                .iter()
                .any(|d| d.message.starts_with("duplicate key") && d.position.is_some())
        {
            return Err(fail(format!(
                "the key {key:?} written twice is not reported as such: {diagnostics}"
            )));
        }
        return check_diagnostics(&text, Path::new(FILE), diagnostics);
    }
    if representable(&tree) {
        // Data written faithfully reads back as itself (unless nested past the loader's limit),
        // and then loads exactly when it builds.
        match yaml::parse(&text) {
            Err((_, message)) if depth(&tree) > MAX_DEPTH && message.starts_with("nested deeper") => {}
            Ok(doc) if doc.value == tree => {}
            Ok(doc) => {
                return Err(fail(format!(
                    "written and read back, the data changed:\n{text}\n{tree}\n{}",
                    doc.value
                )));
            }
            Err(e) => return Err(fail(format!("written faithfully, it does not parse: {e:?}\n{text}"))),
        }
        if depth(&tree) > MAX_DEPTH {
            return match result {
                Ok(_) => Err(fail(format!("nested {} levels deep, yet it loads", depth(&tree)))),
                Err(diagnostics) => check_diagnostics(&text, Path::new(FILE), &diagnostics),
            };
        }
        let builds = serde_json::from_value::<WorkflowDef>(tree.clone())
            .ok()
            .map(|def| Workflow::build(def, &REGISTRY));
        let builds = matches!(builds, Some(Ok(_)));
        if builds != result.is_ok() {
            return Err(fail(format!(
                "the definition {} but the file {}:\n{text}\n{:?}",
                if builds { "builds" } else { "does not build" },
                if result.is_ok() { "loads" } else { "does not load" },
                result.as_ref().err().map(ToString::to_string)
            )));
        }
    }
    match result {
        Ok(workflow) => check_loaded(&workflow, seed),
        Err(diagnostics) => check_diagnostics(&text, Path::new(FILE), &diagnostics),
    }
}

fn check(case: Case) -> Result<(), TestCaseError> {
    in_time(move || match case {
        Case::Data {
            tree,
            mutations,
            seed,
            duplicate,
        } => check_data(&TREES[tree], &mutations, seed, duplicate),
        Case::Text { seed, edits } => {
            let mut text = SEEDS[seed].1.clone();
            for e in &edits {
                apply_edit(&mut text, e);
            }
            check_text(&text, 3)
        }
        Case::Bomb {
            levels,
            width,
            in_workflow,
        } => check_text(&bomb(levels, width, in_workflow), 5),
        Case::Deep(nesting, depth) => check_text(&deep(nesting, depth), 11),
        Case::Raw(text) => check_text(&text, 13),
        Case::Bytes(bytes) => check_bytes(&bytes),
        Case::SeedBytes { seed, at, bad } => {
            let mut bytes = SEEDS[seed].1.clone().into_bytes();
            let n = at.index(bytes.len() + 1);
            bytes.splice(n..n, bad);
            check_bytes(&bytes)
        }
    })?
}

#[test]
fn fuzz_workflow_files() {
    fuzz(&TARGET, cases(), check);
}

/// The seed corpus through `load_file`, each checked like a generated case.
#[test]
fn seed_corpus() {
    for (name, bytes) in corpus("yaml") {
        let path = corpus_dir("yaml").join(&name);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let outcome = in_time(move || match yaml::load_file(&path, &REGISTRY) {
            Ok(workflow) => check_loaded(&workflow, 17),
            Err(diagnostics) => check_diagnostics(&text, &path, &diagnostics),
        });
        if let Err(e) = outcome.and_then(|r| r) {
            panic!("{name}: {e}");
        }
    }
}

/// The shipped workflows load, and survive being written out and loaded again in many styles.
#[test]
fn shipped_workflows_round_trip() {
    for (name, text) in SEEDS.iter().take(dataflow_workflows::REFERENCE_WORKFLOWS.len()) {
        let workflow = yaml::load_str(text, name, &REGISTRY).unwrap_or_else(|e| panic!("{e}"));
        for seed in 0..20 {
            check_loaded(&workflow, seed).unwrap_or_else(|e| panic!("{name}, style {seed}: {e}"));
        }
    }
}

/// Regressions of hangs found by fuzzing, each within the per-case time limit now.
#[test]
fn hostile_sizes_stay_fast() {
    // Ten levels of ten aliases: 10^10 values if expanded.
    let text = bomb(10, 10, true);
    let err = in_time(move || yaml::load_str(&text, FILE, &REGISTRY).map(|_| ()))
        .expect("the alias bomb is refused in time")
        .expect_err("the alias bomb is refused");
    assert!(err.to_string().contains("aliases copy more than"), "{err}");

    // Thousands of problems among thousands of nodes: quadratic hints and excerpts took minutes.
    let mut text = String::from("name: x\nnodes:\n");
    for i in 0..8_000 {
        let _ = writeln!(text, "  n{i:05}: {{type: Merge}}");
    }
    text.push_str("connections:\n");
    for i in 0..8_000 {
        let _ = writeln!(text, "  - {{from: zzzzzz.a, to: n{i:05}.x}}");
    }
    let err = in_time(move || yaml::load_str(&text, FILE, &REGISTRY).map(|_| ()))
        .expect("thousands of problems are reported in time")
        .expect_err("connections from an unknown node are refused");
    assert_eq!(err.0.len(), 8_000);

    // A node type a megabyte long, compared with every registered name by edit distance.
    let text = format!("name: x\nnodes:\n  a:\n    type: {}\n", "Q".repeat(1 << 20));
    let err = in_time(move || yaml::load_str(&text, FILE, &REGISTRY).map(|_| ()))
        .expect("a long type name is refused in time")
        .expect_err("an unknown type is refused");
    assert!(err.to_string().contains("unknown type"), "{err}");
}
