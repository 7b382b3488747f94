//! Validation of a [`WorkflowDef`] into a runnable [`Workflow`], in named passes over the
//! definition: header (name, inputs), nodes, orderings, connections, static params, required
//! inputs, outputs, cycles. Every pass reports into one [`Checker`], so a definition's problems are all found
//! at once, each with a JSON pointer into the definition.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use dataflow_core::values::printable;
use petgraph::graph::DiGraph;
use serde_json::{Map, Value};

use super::def::escape;
use super::{CompiledNode, ConnectionDef, Edge, INPUT, MAX_ATTEMPTS, NodeDef, Problem, Problems, Source, Wiring, Workflow, WorkflowDef};
use crate::node::path::{FieldPath, Segment, kind};
use crate::node::registry::{InstantiateError, Registry};
use crate::node::schema::{MisfitKind, SchemaView, Ty, did_you_mean};
use crate::node::{MAX_MESSAGE_CHARS, shorten};

/// Names compared for "did you mean" hints in one validation, at most.
const HINT_BUDGET: usize = 100_000;

/// Collects the problems of one validation.
struct Checker {
    problems: Vec<Problem>,
    /// Names "did you mean" may still compare against: a definition with thousands of
    /// problems among thousands of names would otherwise take quadratic time for its hints.
    hint_budget: Cell<usize>,
}

impl Checker {
    fn problem(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            pointer: pointer.into(),
            message: shorten(message.into(), MAX_MESSAGE_CHARS),
        });
    }

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

/// One validation in progress: the definition, what the passes have compiled so far, and
/// the problems found.
struct Build<'d> {
    def: &'d WorkflowDef,
    registry: &'d Registry,
    c: Checker,
    /// Node name → position in the definition.
    index: BTreeMap<&'d str, usize>,
    /// Node names in definition order, for hints.
    names: Vec<String>,
    /// Each node compiled, or `None` where it has a problem that stops its checks.
    compiled: Vec<Option<CompiledNode>>,
    edges: Vec<Edge>,
    /// Each (node, root input) fed by a connection.
    fed_roots: HashSet<(usize, String)>,
    outputs: Vec<(String, Source)>,
}

impl Workflow {
    /// Validates `def` against `registry` and compiles it. Every problem is reported, each with
    /// a pointer into the definition.
    pub fn build(def: WorkflowDef, registry: &Registry) -> Result<Workflow, Problems> {
        let (nodes, edges, outputs) = {
            let mut b = Build {
                def: &def,
                registry,
                c: Checker {
                    problems: Vec::new(),
                    hint_budget: Cell::new(HINT_BUDGET),
                },
                index: BTreeMap::new(),
                names: def.nodes.iter().map(|(n, _)| n.clone()).collect(),
                compiled: Vec::with_capacity(def.nodes.len()),
                edges: Vec::new(),
                fed_roots: HashSet::new(),
                outputs: Vec::new(),
            };
            b.check_header();
            b.compile_nodes();
            b.order_after();
            b.connect();
            b.check_params();
            b.check_required_inputs();
            b.resolve_outputs();
            b.check_cycles();
            if !b.c.problems.is_empty() {
                return Err(Problems(b.c.problems));
            }
            let nodes = b.compiled.into_iter().map(|n| n.expect("no problems, so every node compiled"));
            (nodes.collect(), b.edges, b.outputs)
        };
        Ok(Workflow {
            wiring: Wiring::of(def.nodes.len(), &edges),
            def,
            nodes,
            edges,
            outputs,
        })
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 64
}

impl<'d> Build<'d> {
    /// The workflow's name and its declared inputs.
    fn check_header(&mut self) {
        if self.def.name.trim().is_empty() {
            self.c.problem("/name", "the workflow needs a name");
        }
        for (name, input) in &self.def.inputs {
            let at = format!("/inputs/{}", escape(name));
            if !valid_name(name) {
                self.c.problem(
                    &at,
                    format!(
                        "input name \"{}\" must start with a letter and hold only letters, digits, '_' and '-'",
                        printable(name)
                    ),
                );
            }
            if Ty::named(&input.ty).is_none() {
                self.c.problem(
                    format!("{at}/type"),
                    format!(
                        "unknown input type '{}': use string, integer, number, boolean, object, array or any",
                        input.ty
                    ),
                );
            }
        }
    }

    /// Each node: its name, policies and parameters, instantiated from the registry.
    fn compile_nodes(&mut self) {
        let def = self.def;
        for (name, node) in &def.nodes {
            let at = format!("/nodes/{}", escape(name));
            if name == INPUT || !valid_name(name) {
                self.c.problem(
                    &at,
                    format!(
                        "node name \"{}\" must start with a letter, hold only letters, digits, '_' and '-', and not be 'input'",
                        printable(name)
                    ),
                );
            }
            if self.index.insert(name, self.compiled.len()).is_some() {
                self.c.problem(&at, format!("two nodes are named '{name}'"));
            }
            let compiled = self.compile_node(name, node, &at);
            self.compiled.push(compiled);
        }
    }

    /// One node of [`Self::compile_nodes`]; `None` when it cannot be instantiated.
    fn compile_node(&mut self, name: &str, node: &NodeDef, at: &str) -> Option<CompiledNode> {
        if !(node.params.is_null() || node.params.is_object()) {
            self.c.problem(
                format!("{at}/params"),
                format!("params of node '{name}' must be a map, got a {}", kind(&node.params)),
            );
            return None;
        }
        if let Some(retry) = node.retry
            && !(1..=MAX_ATTEMPTS).contains(&retry.attempts)
        {
            self.c.problem(
                format!("{at}/retry/attempts"),
                format!("attempts must be 1 to {MAX_ATTEMPTS}, got {}", retry.attempts),
            );
        }
        if node.timeout_ms == Some(0) {
            self.c.problem(format!("{at}/timeout_ms"), "timeout_ms must be at least 1");
        }
        match self.registry.instantiate(&node.node_type, &node.params) {
            Ok((instance, static_input)) => {
                let static_input = if static_input.is_null() {
                    Value::Object(Map::new())
                } else {
                    static_input
                };
                Some(CompiledNode {
                    name: name.to_string(),
                    type_label: instance.info().type_name.as_str().into(),
                    narrowed_output: instance.output_schema_given(&static_input),
                    node: instance,
                    static_input,
                    timeout: node.timeout_ms.map(Duration::from_millis),
                    retry: node.retry,
                })
            }
            Err(InstantiateError::Unknown { suggestion }) => {
                let hint = suggestion.map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
                self.c.problem(
                    format!("{at}/type"),
                    format!("node '{name}' has unknown type '{}'{hint}", node.node_type),
                );
                None
            }
            Err(InstantiateError::Params(message)) => {
                self.c
                    .problem(format!("{at}/params"), format!("node '{name}' ({}): {message}", node.node_type));
                None
            }
        }
    }

    /// `after` orderings: edges that pass no data.
    fn order_after(&mut self) {
        let def = self.def;
        for (i, (name, node)) in def.nodes.iter().enumerate() {
            for (j, before) in node.after.iter().enumerate() {
                match self.index.get(before.as_str()) {
                    Some(&b) if b != i => self.edges.push(Edge {
                        from: Source::Node(b, FieldPath::parse("after").expect("a valid path")),
                        to: i,
                        to_path: None,
                    }),
                    Some(_) => self.c.problem(
                        format!("/nodes/{}/after/{j}", escape(name)),
                        format!("node '{name}' cannot run after itself"),
                    ),
                    None => self.c.problem(
                        format!("/nodes/{}/after/{j}", escape(name)),
                        format!(
                            "node '{name}' runs after unknown node '{before}'{}",
                            self.c.hint(before, &self.names)
                        ),
                    ),
                }
            }
        }
    }

    /// Connections: each source and target resolved against the node schemas, their types
    /// compared, and each target input fed once (a merge's, any number of times).
    fn connect(&mut self) {
        // The first connection into each (node, path): by lookup, not by scanning earlier
        // connections, since a file may hold a great many.
        let mut fed: HashMap<(usize, FieldPath), usize> = HashMap::new();
        let def = self.def;
        for (k, conn) in def.connections.iter().enumerate() {
            let at = format!("/connections/{k}");
            let source = self.resolve_source(&conn.from, &format!("{at}/from"));
            let Some((to, to_path, target_ty)) = self.resolve_target(conn, &at) else {
                continue;
            };
            let target = self.compiled[to].as_ref().expect("resolved targets are compiled");
            if let (Some((_, source_ty)), Some(target_ty)) = (&source, &target_ty) {
                if !source_ty.fits(target_ty) {
                    let message = format!("type mismatch: '{}' gives {source_ty}, '{}' takes {target_ty}", conn.from, conn.to);
                    self.c.problem(&at, message);
                } else if source_ty.may_be_null() && !target_ty.takes_null() {
                    let message = self.null_into_non_null(conn, target_ty);
                    self.c.problem(&at, message);
                }
            }
            let to_name = &target.name;
            if to_path.segments().len() == 1 && target.static_input.get(to_path.root()).is_some() {
                let message = format!(
                    "input '{}' of node '{to_name}' is both given in params and connected",
                    to_path.root()
                );
                self.c.problem(format!("{at}/to"), message);
            }
            match fed.get(&(to, to_path.clone())) {
                Some(&other_k) if !target.node.merges() => {
                    let message = format!(
                        "input '{to_path}' of node '{to_name}' is already fed by connection {other_k} ('{}')",
                        self.def.connections[other_k].from
                    );
                    self.c.problem(format!("{at}/to"), message);
                }
                Some(_) => {}
                None => {
                    fed.insert((to, to_path.clone()), k);
                }
            }
            self.fed_roots.insert((to, to_path.root().to_string()));
            if let Some((source, _)) = source {
                self.edges.push(Edge {
                    from: source,
                    to,
                    to_path: Some(to_path),
                });
            }
        }
    }

    /// Why connection `conn`, whose source may be null (or absent), cannot feed an input of
    /// type `target` that takes no null, and what the workflow can do about it.
    fn null_into_non_null(&self, conn: &ConnectionDef, target: &Ty) -> String {
        let problem = |why: &str, remedy: &str| {
            format!(
                "'{}' may be null{why}, and '{}' takes {target}, not null: {remedy}",
                conn.from, conn.to
            )
        };
        let switch = "test it with a Switch (op: exists) and connect the Switch's `then`";
        let Some((node, path)) = split(&conn.from) else {
            return problem("", switch);
        };
        let path = FieldPath::parse(path).map(|p| p.segments().to_vec()).unwrap_or_default();
        if node == INPUT {
            let name = path.first().map(segment_text).unwrap_or_default();
            return problem("", &format!("make the workflow's input '{name}' required or give it a default"));
        }
        let Some(source) = self.index.get(node).and_then(|&i| self.compiled[i].as_ref()) else {
            return problem("", switch);
        };
        // The first step that may be null says why: `read.record` for `read.record.id`.
        let view = SchemaView::new(source.output_schema());
        let why = (1..path.len())
            .find(|&n| view.resolve(&path[..n]).is_ok_and(|ty| ty.may_be_null()))
            .map(|n| {
                let shown: Vec<String> = path[..n].iter().map(segment_text).collect();
                format!(" (when '{node}.{}' is null)", shown.join("."))
            })
            .unwrap_or_default();
        if source.node.info().kind == Some(dataflow_core::NodeKind::Read) {
            let remedy = format!("give node '{node}' `required: true` (it then fails when the row is not found), or {switch}");
            problem(&why, &remedy)
        } else {
            problem(&why, switch)
        }
    }

    /// Where connection `conn` (at `at`) writes: the target node (compiled), the input path,
    /// and the type there when the node's schema has the path. `None` after a problem that
    /// leaves nothing to check.
    fn resolve_target(&mut self, conn: &ConnectionDef, at: &str) -> Option<(usize, FieldPath, Option<Ty>)> {
        let Some((to_name, to_path)) = split(&conn.to) else {
            self.c.problem(format!("{at}/to"), format!("'{}' must be node.field", conn.to));
            return None;
        };
        let to_path = match FieldPath::parse(to_path) {
            Ok(p) if p.has_each() => {
                self.c
                    .problem(format!("{at}/to"), format!("'{}': '*' can only be used in 'from'", conn.to));
                return None;
            }
            Ok(p) => p,
            Err(e) => {
                self.c.problem(format!("{at}/to"), e.to_string());
                return None;
            }
        };
        let Some(&to) = self.index.get(to_name) else {
            let message = format!("connection into unknown node '{to_name}'{}", self.c.hint(to_name, &self.names));
            self.c.problem(format!("{at}/to"), message);
            return None;
        };
        let target = self.compiled[to].as_ref()?;
        let view = SchemaView::new(target.node.input_schema());
        let target_ty = match view.resolve(to_path.segments()) {
            Ok(ty) => Some(ty),
            Err(e) => {
                let known = if e.depth == 0 { view.properties() } else { e.known.clone() };
                let shown = to_path.segments()[..=e.depth.min(to_path.segments().len() - 1)]
                    .iter()
                    .map(segment_text)
                    .collect::<Vec<_>>()
                    .join(".");
                let message = format!("node '{to_name}' has no input '{shown}'{}", self.c.hint(&e.missing, &known));
                self.c.problem(format!("{at}/to"), message);
                None
            }
        };
        Some((to, to_path, target_ty))
    }

    /// The static parameters of each fixed node (a generated or typed node, whose params are
    /// its input) against its input schema, as deep as they go: types, enumerations, bounds,
    /// unknown keys, and required keys of nested objects that no connection supplies. Each
    /// misfit is reported where it is written.
    fn check_params(&mut self) {
        for (i, (_, def)) in self.def.nodes.iter().enumerate() {
            let Some(node) = &self.compiled[i] else { continue };
            if self.registry.fixed(&def.node_type).is_none() {
                continue;
            }
            let fed: Vec<&[Segment]> = self
                .edges
                .iter()
                .filter(|e| e.to == i)
                .filter_map(|e| e.to_path.as_ref().map(FieldPath::segments))
                .collect();
            // Top-level inputs are left to `check_required_inputs`; a nested key is supplied
            // when a connection writes it, into it or around it.
            let supplied = |path: &[Segment]| path.len() == 1 || fed.iter().any(|f| f.starts_with(path) || path.starts_with(f));
            let misfits = SchemaView::new(node.node.input_schema()).check(&node.static_input, &supplied);
            let at = format!("/nodes/{}/params", escape(&node.name));
            for misfit in misfits {
                let path: Vec<String> = misfit.at.iter().map(segment_text).collect();
                let pointer = path.iter().fold(at.clone(), |p, s| format!("{p}/{}", escape(s)));
                let (name, path) = (&node.name, path.join("."));
                let message = match misfit.kind {
                    MisfitKind::WrongType { expected, found } => {
                        let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                        format!("input '{path}' of node '{name}' takes {expected}, got {article} {found}")
                    }
                    MisfitKind::NotAllowed(rule) => format!("input '{path}' of node '{name}' {rule}"),
                    MisfitKind::UnknownKey { known } => {
                        let key = path.rsplit('.').next().unwrap_or(&path);
                        format!("node '{name}' has no input '{path}'{}", self.c.hint(key, &known))
                    }
                    MisfitKind::Missing { keys } => {
                        let mut wanted: Vec<String> = keys
                            .iter()
                            .map(|key| {
                                if path.is_empty() {
                                    format!("'{key}'")
                                } else {
                                    format!("'{path}.{key}'")
                                }
                            })
                            .collect();
                        let type_name = &node.node.info().type_name;
                        match wanted.pop() {
                            Some(last) if !wanted.is_empty() => format!(
                                "node '{name}' ({type_name}) needs inputs {} and {last}: give them in params or connect them",
                                wanted.join(", ")
                            ),
                            last => format!(
                                "node '{name}' ({type_name}) needs input {}: give it in params or connect it",
                                last.unwrap_or_default()
                            ),
                        }
                    }
                };
                self.c.problem(pointer, message);
            }
        }
    }

    /// Every input a node's schema requires is given in params or connected.
    fn check_required_inputs(&mut self) {
        for (i, node) in self.compiled.iter().enumerate() {
            let Some(node) = node else { continue };
            let view = SchemaView::new(node.node.input_schema());
            for field in view.required() {
                let given = node.static_input.get(&field).is_some();
                let connected = self.fed_roots.contains(&(i, field.clone()));
                if !given && !connected {
                    self.c.problem(
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
    }

    /// The workflow's declared outputs: valid names, each from a node output or an input.
    fn resolve_outputs(&mut self) {
        let def = self.def;
        for (name, from) in &def.outputs {
            let at = format!("/outputs/{}", escape(name));
            if !valid_name(name) {
                self.c.problem(
                    &at,
                    format!(
                        "output name \"{}\" must start with a letter and hold only letters, digits, '_' and '-'",
                        printable(name)
                    ),
                );
            }
            if let Some((source, _)) = self.resolve_source(from, &at) {
                self.outputs.push((name.clone(), source));
            }
        }
    }

    /// Cycles among the nodes, each reported once, in an order that follows its edges.
    fn check_cycles(&mut self) {
        let mut graph = DiGraph::<usize, ()>::new();
        let ids: Vec<_> = (0..self.def.nodes.len()).map(|i| graph.add_node(i)).collect();
        for e in &self.edges {
            if let Source::Node(from, _) = e.from {
                graph.add_edge(ids[from], ids[e.to], ());
            }
        }
        for component in petgraph::algo::tarjan_scc(&graph) {
            let cyclic = component.len() > 1 || component.iter().any(|n| graph.contains_edge(*n, *n));
            if cyclic {
                let mut members: Vec<usize> = component.iter().map(|n| graph[*n]).collect();
                members.sort();
                let cycle = cycle_order(&self.edges, &members);
                let text: Vec<&str> = cycle.iter().map(|i| self.def.nodes[*i].0.as_str()).collect();
                self.c.problem("/connections", format!("cycle: {} → {}", text.join(" → "), text[0]));
            }
        }
    }

    /// Where `from` (`node.path` or `input.name.path`, written at `at`) reads, and the type
    /// there; `None` after reporting why it does not resolve.
    fn resolve_source(&mut self, from: &str, at: &str) -> Option<(Source, Ty)> {
        let Some((node, path)) = split(from) else {
            self.c.problem(at, format!("'{from}' must be node.field or input.name"));
            return None;
        };
        let path = match FieldPath::parse(path) {
            Ok(p) => p,
            Err(e) => {
                self.c.problem(at, e.to_string());
                return None;
            }
        };
        if node == INPUT {
            let Some(input) = self.def.inputs.get(path.root()) else {
                let hint = self.c.hint(path.root(), self.def.inputs.keys());
                self.c.problem(at, format!("the workflow has no input '{}'{hint}", path.root()));
                return None;
            };
            let ty = if path.segments().len() == 1 {
                let ty = Ty::named(&input.ty).unwrap_or(Ty::Any);
                // An optional input without a default is absent from a run that does not give
                // it, and `default: null` gives null.
                let absent = matches!(input.default, None | Some(Value::Null)) && !input.is_required();
                if absent { ty.or_null() } else { ty }
            } else if path.has_each() {
                Ty::one("array")
            } else {
                Ty::Any
            };
            return Some((Source::Input(path), ty));
        }
        let Some(&i) = self.index.get(node) else {
            self.c.problem(
                at,
                format!("connection from unknown node '{node}'{}", self.c.hint(node, &self.names)),
            );
            return None;
        };
        let compiled = self.compiled[i].as_ref()?;
        let view = SchemaView::new(compiled.output_schema());
        match view.resolve(path.segments()) {
            Ok(ty) => Some((Source::Node(i, path), ty)),
            Err(e) => {
                let known = if e.depth == 0 { view.properties() } else { e.known.clone() };
                let message = format!("node '{node}' has no output '{path}'{}", self.c.hint(&e.missing, &known));
                self.c.problem(at, message);
                None
            }
        }
    }
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

/// A path step as written in a field path: a key, a position or `*`.
fn segment_text(segment: &Segment) -> String {
    match segment {
        Segment::Key(k) => k.clone(),
        Segment::Index(i) => i.to_string(),
        Segment::Each => "*".into(),
    }
}
