//! Pictures of a workflow's DAG: Mermaid and Graphviz DOT source.

use std::collections::BTreeSet;

use super::{Source, Workflow};

impl Workflow {
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
