//! Workflows: the definition (what a YAML file or the builder describes), the Rust builder, and
//! validation into a runnable [`Workflow`], which reports every problem at once.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use dataflow_core::Node;
use dataflow_core::values::printable;
use petgraph::graph::DiGraph;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod yaml;

use crate::node::path::FieldPath;
use crate::node::registry::{InstantiateError, Registry};
use crate::node::schema::{SchemaView, Ty, did_you_mean};
use crate::node::{MAX_MESSAGE_CHARS, NodeRef, shorten};

/// The name connections use for the workflow's own inputs: `input.product.name`.
pub const INPUT: &str = "input";

/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 10;

/// How often and how patiently a node is retried after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, 1 to 10 (1: no retry).
    #[serde(default = "RetryPolicy::default_attempts")]
    pub attempts: u32,
    /// Backoff before the second attempt; doubles for each further one, with full jitter.
    #[serde(default = "RetryPolicy::default_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest backoff.
    #[serde(default = "RetryPolicy::default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    fn default_attempts() -> u32 {
        3
    }
    fn default_backoff_ms() -> u64 {
        50
    }
    fn default_max_backoff_ms() -> u64 {
        2_000
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: Self::default_attempts(),
            backoff_ms: Self::default_backoff_ms(),
            max_backoff_ms: Self::default_max_backoff_ms(),
        }
    }
}

/// One declared input of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// `string`, `integer`, `number`, `boolean`, `object`, `array` or `any` (default).
    #[serde(rename = "type", default = "InputDef::any")]
    pub ty: String,
    /// Whether a run must give it (default: yes, unless there is a default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value when a run does not give one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// What it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl InputDef {
    fn any() -> String {
        "any".into()
    }

    /// An input of JSON type `ty`.
    pub fn of(ty: &str) -> Self {
        InputDef {
            ty: ty.into(),
            required: None,
            default: None,
            description: String::new(),
        }
    }

    /// Whether a run must give it.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }
}

/// One node instance of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// A registered node type, e.g. `ProductSearchNode`.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Static input values (generated nodes) or configuration (generic nodes).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    /// Time limit of one attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy, replacing the runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Nodes that must finish before this one, without passing data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// `from` (`node.output.path` or `input.name.path`) feeds `to` (`node.input.path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionDef {
    /// Where the value comes from.
    pub from: String,
    /// Where it goes.
    pub to: String,
}

/// A whole workflow as written: in YAML or through [`WorkflowBuilder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// The workflow's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Declared inputs, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputDef>,
    /// Node instances, by name, in the order written.
    #[serde(with = "ordered_nodes")]
    pub nodes: Vec<(String, NodeDef)>,
    /// Data flowing between nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionDef>,
    /// The workflow's outputs: name → `node.output.path`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

mod ordered_nodes {
    //! `nodes:` is a map in the file and an ordered list in memory.
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    use super::NodeDef;

    pub fn serialize<S: Serializer>(nodes: &[(String, NodeDef)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(nodes.len()))?;
        for (name, def) in nodes {
            map.serialize_entry(name, def)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, NodeDef)>, D::Error> {
        struct Nodes;
        impl<'de> Visitor<'de> for Nodes {
            type Value = Vec<(String, NodeDef)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of node names to nodes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, NodeDef>()? {
                    out.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(Nodes)
    }
}

/// One thing wrong with a workflow: where (a JSON pointer into the definition, e.g.
/// `/nodes/similar/params/qeury` or `/connections/3/to`) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON pointer into the workflow definition.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", if p.pointer.is_empty() { "/" } else { &p.pointer }, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Builds a [`WorkflowDef`] in Rust.
///
/// ```text
/// let mut b = WorkflowBuilder::new("classify");
/// b.input("product", "object");
/// b.add_node("similar", "ProductSearchNode", json!({"top_k": 10}));
/// b.connect("input", "product.name", "similar", "query");
/// let workflow = b.build(&registry)?;
/// ```
#[derive(Debug, Clone)]
pub struct WorkflowBuilder {
    def: WorkflowDef,
    extra: Vec<fn(&mut Registry)>,
}

impl WorkflowBuilder {
    /// An empty workflow called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        WorkflowBuilder {
            def: WorkflowDef {
                name: name.into(),
                description: String::new(),
                inputs: BTreeMap::new(),
                nodes: Vec::new(),
                connections: Vec::new(),
                outputs: BTreeMap::new(),
            },
            extra: Vec::new(),
        }
    }

    /// Sets the description.
    pub fn description(&mut self, text: impl Into<String>) -> &mut Self {
        self.def.description = text.into();
        self
    }

    /// Declares a required input of JSON type `ty` (`string`, `integer`, ..., `any`).
    pub fn input(&mut self, name: impl Into<String>, ty: &str) -> &mut Self {
        self.def.inputs.insert(name.into(), InputDef::of(ty));
        self
    }

    /// Adds a node of a registered type by name, with static parameters.
    pub fn add_node(&mut self, name: impl Into<String>, node_type: impl Into<String>, params: Value) -> &mut Self {
        self.def.nodes.push((
            name.into(),
            NodeDef {
                node_type: node_type.into(),
                params,
                timeout_ms: None,
                retry: None,
                after: Vec::new(),
            },
        ));
        self
    }

    /// Adds a node by its Rust type, with a typed input (connections then replace fields of
    /// it). The node type is registered for this workflow if the registry lacks it.
    pub fn node<N: Node + Default>(&mut self, name: impl Into<String>, node: N, input: N::Input) -> &mut Self {
        let params = serde_json::to_value(&input).unwrap_or(Value::Null);
        self.extra.push(|r: &mut Registry| {
            r.register(N::default());
        });
        self.add_node(name, node.descriptor().type_name, params)
    }

    /// Connects `from_node.from_path` to `to_node.to_path`; `from_node` may be `input`.
    pub fn connect(&mut self, from_node: &str, from_path: &str, to_node: &str, to_path: &str) -> &mut Self {
        self.def.connections.push(ConnectionDef {
            from: format!("{from_node}.{from_path}"),
            to: format!("{to_node}.{to_path}"),
        });
        self
    }

    /// Makes `node` wait for `before` without passing data.
    pub fn after(&mut self, node: &str, before: &str) -> &mut Self {
        if let Some((_, def)) = self.def.nodes.iter_mut().find(|(n, _)| n == node) {
            def.after.push(before.to_string());
        }
        self
    }

    /// Sets a node's retry policy.
    pub fn retry(&mut self, node: &str, policy: RetryPolicy) -> &mut Self {
        if let Some((_, def)) = self.def.nodes.iter_mut().find(|(n, _)| n == node) {
            def.retry = Some(policy);
        }
        self
    }

    /// Sets a node's time limit per attempt.
    pub fn timeout(&mut self, node: &str, limit: Duration) -> &mut Self {
        if let Some((_, def)) = self.def.nodes.iter_mut().find(|(n, _)| n == node) {
            def.timeout_ms = Some(limit.as_millis().max(1) as u64);
        }
        self
    }

    /// Declares workflow output `name` as `node.path`.
    pub fn output(&mut self, name: impl Into<String>, node: &str, path: &str) -> &mut Self {
        self.def.outputs.insert(name.into(), format!("{node}.{path}"));
        self
    }

    /// The definition so far.
    pub fn def(&self) -> &WorkflowDef {
        &self.def
    }

    /// Validates and compiles the workflow against `registry`.
    pub fn build(&self, registry: &Registry) -> Result<Workflow, Problems> {
        if self.extra.is_empty() {
            return Workflow::build(self.def.clone(), registry);
        }
        let mut registry = registry.clone();
        for add in &self.extra {
            add(&mut registry);
        }
        Workflow::build(self.def.clone(), &registry)
    }
}

/// A validated node instance of a [`Workflow`].
pub(crate) struct CompiledNode {
    pub name: String,
    pub node: NodeRef,
    /// The node type as a metrics label, shared instead of copied on every run.
    pub type_label: std::sync::Arc<str>,
    pub static_input: Value,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
}

/// Where a connection takes its value from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A workflow input: the path starts with the input's name.
    Input(FieldPath),
    /// A node's output.
    Node(usize, FieldPath),
}

/// A validated connection (or an `after` ordering, with no `to` path).
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub from: Source,
    pub to: usize,
    pub to_path: Option<FieldPath>,
}

impl Edge {
    /// Where the edge writes into its target's input; only edges that carry data (all but
    /// `after` ordering edges) ever deliver a value.
    pub fn data_path(&self) -> &FieldPath {
        self.to_path.as_ref().expect("only edges that carry data deliver values")
    }
}

/// A validated workflow, ready to run any number of times.
pub struct Workflow {
    pub(crate) def: WorkflowDef,
    pub(crate) nodes: Vec<CompiledNode>,
    pub(crate) edges: Vec<Edge>,
    pub(crate) outputs: Vec<(String, Source)>,
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.def.name)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

struct Checker {
    problems: Vec<Problem>,
    /// Names "did you mean" may still compare against: a definition with thousands of
    /// problems among thousands of names would otherwise take quadratic time for its hints.
    hint_budget: Cell<usize>,
}

/// Names compared for "did you mean" hints in one validation, at most.
const HINT_BUDGET: usize = 100_000;

impl Checker {
    fn problem(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            pointer: pointer.into(),
            message: shorten(message.into(), MAX_MESSAGE_CHARS),
        });
    }
}

fn valid_node_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 64
}

impl Checker {
    /// ` (did you mean 'x'?)` when a known name is close to `wanted`, while the hint budget
    /// lasts; empty otherwise.
    fn hint<'n, I>(&self, wanted: &str, known: I) -> String
    where
        I: IntoIterator<Item = &'n String>,
        I::IntoIter: ExactSizeIterator,
    {
        let known = known.into_iter();
        let left = self.hint_budget.get();
        if known.len() > left {
            return String::new();
        }
        self.hint_budget.set(left - known.len());
        did_you_mean(wanted, known.map(String::as_str))
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default()
    }
}

impl Workflow {
    /// Validates `def` against `registry` and compiles it. Every problem is reported, each with
    /// a pointer into the definition.
    pub fn build(def: WorkflowDef, registry: &Registry) -> Result<Workflow, Problems> {
        let mut c = Checker {
            problems: Vec::new(),
            hint_budget: Cell::new(HINT_BUDGET),
        };
        if def.name.trim().is_empty() {
            c.problem("/name", "the workflow needs a name");
        }
        for (name, input) in &def.inputs {
            let at = format!("/inputs/{}", escape(name));
            if !valid_node_name(name) {
                c.problem(
                    &at,
                    format!(
                        "input name \"{}\" must start with a letter and hold only letters, digits, '_' and '-'",
                        printable(name)
                    ),
                );
            }
            if Ty::named(&input.ty).is_none() {
                c.problem(
                    format!("{at}/type"),
                    format!(
                        "unknown input type '{}': use string, integer, number, boolean, object, array or any",
                        input.ty
                    ),
                );
            }
        }

        // Nodes.
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut compiled: Vec<Option<CompiledNode>> = Vec::new();
        for (name, node) in &def.nodes {
            let at = format!("/nodes/{}", escape(name));
            if name == INPUT || !valid_node_name(name) {
                c.problem(
                    &at,
                    format!(
                        "node name \"{}\" must start with a letter, hold only letters, digits, '_' and '-', and not be 'input'",
                        printable(name)
                    ),
                );
            }
            if index.insert(name, compiled.len()).is_some() {
                c.problem(&at, format!("two nodes are named '{name}'"));
            }
            if !(node.params.is_null() || node.params.is_object()) {
                c.problem(
                    format!("{at}/params"),
                    format!(
                        "params of node '{name}' must be a map, got a {}",
                        crate::node::path::kind(&node.params)
                    ),
                );
                compiled.push(None);
                continue;
            }
            if let Some(retry) = node.retry
                && !(1..=MAX_ATTEMPTS).contains(&retry.attempts)
            {
                c.problem(
                    format!("{at}/retry/attempts"),
                    format!("attempts must be 1 to {MAX_ATTEMPTS}, got {}", retry.attempts),
                );
            }
            if node.timeout_ms == Some(0) {
                c.problem(format!("{at}/timeout_ms"), "timeout_ms must be at least 1");
            }
            match registry.instantiate(&node.node_type, &node.params) {
                Ok((instance, static_input)) => {
                    if registry.fixed(&node.node_type).is_some() {
                        check_params(&mut c, name, &at, &instance, &static_input);
                    }
                    compiled.push(Some(CompiledNode {
                        name: name.clone(),
                        type_label: instance.info().type_name.as_str().into(),
                        node: instance,
                        static_input: if static_input.is_null() {
                            Value::Object(Map::new())
                        } else {
                            static_input
                        },
                        timeout: node.timeout_ms.map(Duration::from_millis),
                        retry: node.retry,
                    }));
                }
                Err(InstantiateError::Unknown { suggestion }) => {
                    let hint = suggestion.map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
                    c.problem(
                        format!("{at}/type"),
                        format!("node '{name}' has unknown type '{}'{hint}", node.node_type),
                    );
                    compiled.push(None);
                }
                Err(InstantiateError::Params(message)) => {
                    c.problem(format!("{at}/params"), format!("node '{name}' ({}): {message}", node.node_type));
                    compiled.push(None);
                }
            }
        }
        let names: Vec<String> = def.nodes.iter().map(|(n, _)| n.clone()).collect();

        // Edges: `after` orderings, then connections.
        let mut edges = Vec::new();
        for (i, (name, node)) in def.nodes.iter().enumerate() {
            for (j, before) in node.after.iter().enumerate() {
                match index.get(before.as_str()) {
                    Some(&b) if b != i => edges.push(Edge {
                        from: Source::Node(b, FieldPath::parse("after").expect("a valid path")),
                        to: i,
                        to_path: None,
                    }),
                    Some(_) => c.problem(
                        format!("/nodes/{}/after/{j}", escape(name)),
                        format!("node '{name}' cannot run after itself"),
                    ),
                    None => c.problem(
                        format!("/nodes/{}/after/{j}", escape(name)),
                        format!("node '{name}' runs after unknown node '{before}'{}", c.hint(before, &names)),
                    ),
                }
            }
        }
        // Connected inputs: the first connection into each (node, path), and each (node, root
        // field) fed at all.
        let mut fed: HashMap<(usize, FieldPath), usize> = HashMap::new();
        let mut fed_roots: HashSet<(usize, String)> = HashSet::new();
        for (k, conn) in def.connections.iter().enumerate() {
            let at = format!("/connections/{k}");
            let source = resolve_source(&mut c, &def, &index, &compiled, &names, &conn.from, &format!("{at}/from"));
            let Some((to_name, to_path)) = split(&conn.to) else {
                c.problem(format!("{at}/to"), format!("'{}' must be node.field", conn.to));
                continue;
            };
            let to_path = match FieldPath::parse(to_path) {
                Ok(p) if p.has_each() => {
                    c.problem(format!("{at}/to"), format!("'{}': '*' can only be used in 'from'", conn.to));
                    continue;
                }
                Ok(p) => p,
                Err(e) => {
                    c.problem(format!("{at}/to"), e);
                    continue;
                }
            };
            let Some(&to) = index.get(to_name) else {
                c.problem(
                    format!("{at}/to"),
                    format!("connection into unknown node '{to_name}'{}", c.hint(to_name, &names)),
                );
                continue;
            };
            let Some(target) = compiled[to].as_ref() else { continue };
            let view = SchemaView::new(target.node.input_schema());
            let target_ty = match view.resolve(to_path.segments()) {
                Ok(ty) => Some(ty),
                Err(e) => {
                    let known = if e.depth == 0 { view.properties() } else { e.known.clone() };
                    let shown = to_path.segments()[..=e.depth.min(to_path.segments().len() - 1)]
                        .iter()
                        .map(|s| match s {
                            crate::node::path::Segment::Key(k) => k.clone(),
                            crate::node::path::Segment::Index(i) => i.to_string(),
                            crate::node::path::Segment::Each => "*".into(),
                        })
                        .collect::<Vec<_>>()
                        .join(".");
                    c.problem(
                        format!("{at}/to"),
                        format!("node '{to_name}' has no input '{shown}'{}", c.hint(&e.missing, &known)),
                    );
                    None
                }
            };
            if let (Some((_, source_ty)), Some(target_ty)) = (&source, &target_ty)
                && !source_ty.fits(target_ty)
            {
                c.problem(
                    &at,
                    format!("type mismatch: '{}' gives {source_ty}, '{}' takes {target_ty}", conn.from, conn.to),
                );
            }
            if to_path.segments().len() == 1 && target.static_input.get(to_path.root()).is_some() {
                c.problem(
                    format!("{at}/to"),
                    format!(
                        "input '{}' of node '{to_name}' is both given in params and connected",
                        to_path.root()
                    ),
                );
            }
            // By lookup, not by scanning earlier connections: a file may hold a great many.
            match fed.get(&(to, to_path.clone())) {
                Some(&other_k) if !target.node.merges() => c.problem(
                    format!("{at}/to"),
                    format!(
                        "input '{to_path}' of node '{to_name}' is already fed by connection {other_k} ('{}')",
                        def.connections[other_k].from
                    ),
                ),
                Some(_) => {}
                None => {
                    fed.insert((to, to_path.clone()), k);
                }
            }
            fed_roots.insert((to, to_path.root().to_string()));
            if let Some((source, _)) = source {
                edges.push(Edge {
                    from: source,
                    to,
                    to_path: Some(to_path),
                });
            }
        }

        // Required inputs.
        for (i, node) in compiled.iter().enumerate() {
            let Some(node) = node else { continue };
            let view = SchemaView::new(node.node.input_schema());
            for field in view.required() {
                let given = node.static_input.get(&field).is_some();
                let connected = fed_roots.contains(&(i, field.clone()));
                if !given && !connected {
                    c.problem(
                        format!("/nodes/{}", escape(&node.name)),
                        format!(
                            "node '{}' ({}) needs input '{field}': give it in params or connect it",
                            node.name,
                            node.node.info().type_name
                        ),
                    );
                }
            }
        }

        // Outputs.
        let mut outputs = Vec::new();
        for (name, from) in &def.outputs {
            if !valid_node_name(name) {
                c.problem(
                    format!("/outputs/{}", escape(name)),
                    format!(
                        "output name \"{}\" must start with a letter and hold only letters, digits, '_' and '-'",
                        printable(name)
                    ),
                );
            }
            if let Some((source, _)) = resolve_source(&mut c, &def, &index, &compiled, &names, from, &format!("/outputs/{}", escape(name)))
            {
                outputs.push((name.clone(), source));
            }
        }

        // Cycles.
        let mut graph = DiGraph::<usize, ()>::new();
        let ids: Vec<_> = (0..def.nodes.len()).map(|i| graph.add_node(i)).collect();
        for e in &edges {
            if let Source::Node(from, _) = e.from {
                graph.add_edge(ids[from], ids[e.to], ());
            }
        }
        for component in petgraph::algo::tarjan_scc(&graph) {
            let cyclic = component.len() > 1 || component.iter().any(|n| graph.contains_edge(*n, *n));
            if cyclic {
                let mut members: Vec<usize> = component.iter().map(|n| graph[*n]).collect();
                members.sort();
                let cycle = cycle_order(&edges, &members);
                let text: Vec<&str> = cycle.iter().map(|i| def.nodes[*i].0.as_str()).collect();
                c.problem("/connections", format!("cycle: {} → {}", text.join(" → "), text[0]));
            }
        }

        if !c.problems.is_empty() {
            return Err(Problems(c.problems));
        }
        Ok(Workflow {
            nodes: compiled
                .into_iter()
                .map(|n| n.expect("no problems, so every node compiled"))
                .collect(),
            def,
            edges,
            outputs,
        })
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The definition it was built from.
    pub fn def(&self) -> &WorkflowDef {
        &self.def
    }

    /// Declared inputs.
    pub fn inputs(&self) -> &BTreeMap<String, InputDef> {
        &self.def.inputs
    }

    /// Node names in definition order.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// The DAG as Mermaid (`flowchart LR`) or Graphviz DOT source.
    pub fn render(&self, format: GraphFormat) -> String {
        let mut out = String::new();
        let label = |i: usize| format!("{}<br/>{}", self.nodes[i].name, self.nodes[i].node.info().type_name);
        let mut pairs = BTreeSet::new();
        for e in &self.edges {
            let from = match &e.from {
                Source::Input(p) => format!("input:{}", p.root()),
                Source::Node(n, _) => self.nodes[*n].name.clone(),
            };
            let what = match &e.to_path {
                Some(p) => p.to_string(),
                None => "after".into(),
            };
            pairs.insert((from, self.nodes[e.to].name.clone(), what));
        }
        match format {
            GraphFormat::Mermaid => {
                out.push_str("flowchart LR\n");
                for (i, n) in self.nodes.iter().enumerate() {
                    out.push_str(&format!("  {}[\"{}\"]\n", mermaid_id(&n.name), label(i)));
                }
                for name in self.def.inputs.keys() {
                    out.push_str(&format!("  {}([\"input: {name}\"])\n", mermaid_id(&format!("input:{name}"))));
                }
                for (from, to, what) in pairs {
                    out.push_str(&format!("  {} -->|{}| {}\n", mermaid_id(&from), what, mermaid_id(&to)));
                }
            }
            GraphFormat::Dot => {
                out.push_str(&format!("digraph {:?} {{\n  rankdir=LR;\n", self.def.name));
                for n in &self.nodes {
                    out.push_str(&format!(
                        "  {:?} [shape=box, label={:?}];\n",
                        n.name,
                        format!("{}\n{}", n.name, n.node.info().type_name)
                    ));
                }
                for name in self.def.inputs.keys() {
                    out.push_str(&format!("  {:?} [shape=ellipse];\n", format!("input:{name}")));
                }
                for (from, to, what) in pairs {
                    out.push_str(&format!("  {from:?} -> {to:?} [label={what:?}];\n"));
                }
                out.push_str("}\n");
            }
        }
        out
    }
}

/// Picture formats of [`Workflow::render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Mermaid flowchart source.
    Mermaid,
    /// Graphviz DOT source.
    Dot,
}

fn mermaid_id(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// The members of a strongly connected component in an order that follows its edges.
fn cycle_order(edges: &[Edge], members: &[usize]) -> Vec<usize> {
    let next = |n: usize| {
        edges.iter().find_map(|e| match e.from {
            Source::Node(f, _) if f == n && members.contains(&e.to) => Some(e.to),
            _ => None,
        })
    };
    let mut order = vec![members[0]];
    while let Some(n) = next(*order.last().expect("non-empty")) {
        if order.contains(&n) || order.len() > members.len() {
            break;
        }
        order.push(n);
    }
    order
}

fn split(text: &str) -> Option<(&str, &str)> {
    let (node, path) = text.split_once('.')?;
    (!node.is_empty() && !path.is_empty()).then_some((node, path))
}

fn resolve_source(
    c: &mut Checker,
    def: &WorkflowDef,
    index: &BTreeMap<&str, usize>,
    compiled: &[Option<CompiledNode>],
    names: &[String],
    from: &str,
    at: &str,
) -> Option<(Source, Ty)> {
    let Some((node, path)) = split(from) else {
        c.problem(at, format!("'{from}' must be node.field or input.name"));
        return None;
    };
    let path = match FieldPath::parse(path) {
        Ok(p) => p,
        Err(e) => {
            c.problem(at, e);
            return None;
        }
    };
    if node == INPUT {
        let Some(input) = def.inputs.get(path.root()) else {
            c.problem(
                at,
                format!(
                    "the workflow has no input '{}'{}",
                    path.root(),
                    c.hint(path.root(), def.inputs.keys())
                ),
            );
            return None;
        };
        let ty = if path.segments().len() == 1 {
            Ty::named(&input.ty).unwrap_or(Ty::Any)
        } else if path.has_each() {
            Ty::one("array")
        } else {
            Ty::Any
        };
        return Some((Source::Input(path), ty));
    }
    let Some(&i) = index.get(node) else {
        c.problem(at, format!("connection from unknown node '{node}'{}", c.hint(node, names)));
        return None;
    };
    let compiled = compiled[i].as_ref()?;
    let view = SchemaView::new(compiled.node.output_schema());
    match view.resolve(path.segments()) {
        Ok(ty) => Some((Source::Node(i, path), ty)),
        Err(e) => {
            let known = if e.depth == 0 { view.properties() } else { e.known.clone() };
            c.problem(at, format!("node '{node}' has no output '{path}'{}", c.hint(&e.missing, &known)));
            None
        }
    }
}

fn check_params(c: &mut Checker, name: &str, at: &str, node: &NodeRef, params: &Value) {
    let Some(params) = params.as_object() else { return };
    let view = SchemaView::new(node.input_schema());
    let known = view.properties();
    for (key, value) in params {
        match view.resolve(&[crate::node::path::Segment::Key(key.clone())]) {
            Ok(ty) => {
                let given = Ty::one(crate::node::path::kind(value));
                if !value.is_null() && !given.fits(&ty) {
                    c.problem(
                        format!("{at}/params/{}", escape(key)),
                        format!("input '{key}' of node '{name}' takes {ty}, got a {given}"),
                    );
                }
            }
            Err(_) => c.problem(
                format!("{at}/params/{}", escape(key)),
                format!("node '{name}' has no input '{key}'{}", c.hint(key, &known)),
            ),
        }
    }
}
