//! Reading node schemas (JSON Schema as schemars writes it): the type found at a field path,
//! the required top-level inputs, and whether an output type fits an input type. Used by
//! workflow validation; nothing here runs a node.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use super::path::Segment;

/// The JSON types a schema position admits; `Any` where the schema does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    /// Whatever the schema leaves open.
    Any,
    /// One or more of `null`, `boolean`, `integer`, `number`, `string`, `array`, `object`.
    Of(BTreeSet<&'static str>),
}

impl Ty {
    /// A single JSON type.
    pub fn one(name: &'static str) -> Ty {
        Ty::Of(BTreeSet::from([name]))
    }

    /// The type written in a workflow's `inputs` section: one of the JSON type names or `any`.
    pub fn named(name: &str) -> Option<Ty> {
        let known = ["null", "boolean", "integer", "number", "string", "array", "object"];
        match name {
            "any" => Some(Ty::Any),
            _ => known.iter().find(|k| **k == name).map(|k| Ty::one(k)),
        }
    }

    /// Whether a value of type `self` can be given where `target` is expected. `null` on the
    /// producing side is ignored (an absent optional value is reported when the node runs),
    /// and an integer fits a number.
    pub fn fits(&self, target: &Ty) -> bool {
        let (Ty::Of(from), Ty::Of(to)) = (self, target) else {
            return true;
        };
        from.iter()
            .filter(|t| **t != "null")
            .all(|t| to.contains(t) || (*t == "integer" && to.contains("number")))
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Any => f.write_str("any"),
            Ty::Of(set) => {
                let names: Vec<_> = set.iter().copied().collect();
                f.write_str(&names.join(" or "))
            }
        }
    }
}

/// Why a path does not resolve in a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// How many leading segments resolved before the failure.
    pub depth: usize,
    /// The key that is not there.
    pub missing: String,
    /// The keys that are there at that point, for "did you mean".
    pub known: Vec<String>,
}

/// A schema with its root, so `$ref`s into `$defs` resolve.
#[derive(Debug, Clone, Copy)]
pub struct SchemaView<'a> {
    root: &'a Value,
}

impl<'a> SchemaView<'a> {
    /// A view of a whole schema document.
    pub fn new(root: &'a Value) -> Self {
        SchemaView { root }
    }

    /// The type at `path`, or where the path leaves the schema.
    pub fn resolve(&self, path: &[Segment]) -> Result<Ty, Unresolved> {
        self.resolve_in(self.root, path, 0)
    }

    /// Top-level fields every alternative of the schema requires.
    pub fn required(&self) -> BTreeSet<String> {
        self.required_in(self.root)
    }

    fn required_in(&self, schema: &'a Value) -> BTreeSet<String> {
        let schema = self.deref(schema);
        let mut own: BTreeSet<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        for branch in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            own.extend(self.required_in(branch));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = schema.get(key).and_then(Value::as_array) {
                let mut sets = branches.iter().map(|b| self.required_in(b));
                if let Some(first) = sets.next() {
                    own.extend(sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect()));
                }
            }
        }
        own
    }

    /// Top-level property names of any alternative.
    pub fn properties(&self) -> Vec<String> {
        let mut names = Vec::new();
        for alt in self.alternatives(self.root) {
            if let Some(props) = alt.get("properties").and_then(Value::as_object) {
                for k in props.keys() {
                    if !names.contains(k) {
                        names.push(k.clone());
                    }
                }
            }
        }
        names
    }

    fn deref(&self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..32 {
            match current.get("$ref").and_then(Value::as_str) {
                Some(r) => match r.strip_prefix("#/") {
                    Some(pointer) => match self.root.pointer(&format!("/{pointer}")) {
                        Some(target) => current = target,
                        None => return current,
                    },
                    None => return current,
                },
                None => return current,
            }
        }
        current
    }

    /// The schema and its `anyOf`/`oneOf`/`allOf` branches, each dereferenced, flattened.
    fn alternatives(&self, schema: &'a Value) -> Vec<&'a Value> {
        let schema = self.deref(schema);
        let mut out = vec![schema];
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(branches) = schema.get(key).and_then(Value::as_array) {
                for b in branches {
                    out.extend(self.alternatives(b));
                }
            }
        }
        out
    }

    fn types_of(&self, schema: &'a Value) -> Ty {
        let mut set = BTreeSet::new();
        for alt in self.alternatives(schema) {
            match alt.get("type") {
                Some(Value::String(t)) => {
                    set.insert(static_name(t));
                }
                Some(Value::Array(ts)) => set.extend(ts.iter().filter_map(Value::as_str).map(static_name)),
                _ => {
                    if let Some(c) = alt.get("const") {
                        set.insert(super::path::kind(c));
                    } else if let Some(values) = alt.get("enum").and_then(Value::as_array) {
                        set.extend(values.iter().map(super::path::kind));
                    } else if alt.get("properties").is_some() {
                        set.insert("object");
                    }
                }
            }
        }
        set.remove("");
        if set.is_empty() { Ty::Any } else { Ty::Of(set) }
    }

    fn resolve_in(&self, schema: &'a Value, path: &[Segment], depth: usize) -> Result<Ty, Unresolved> {
        let Some((first, rest)) = path.split_first() else {
            return Ok(self.types_of(schema));
        };
        let alternatives = self.alternatives(schema);
        match first {
            Segment::Key(key) => {
                let mut open = false;
                let mut known = Vec::new();
                let mut found = Vec::new();
                for alt in &alternatives {
                    if is_open(alt) {
                        open = true;
                    }
                    if let Some(props) = alt.get("properties").and_then(Value::as_object) {
                        if let Some(p) = props.get(key) {
                            found.push(p);
                        }
                        known.extend(props.keys().cloned());
                    }
                    match alt.get("additionalProperties") {
                        Some(Value::Bool(false)) => {}
                        Some(extra) if extra.is_object() => found.push(extra),
                        Some(_) => open = true,
                        None => {
                            if alt.get("type").and_then(Value::as_str) == Some("object") && alt.get("properties").is_none() {
                                open = true;
                            }
                        }
                    }
                }
                if !found.is_empty() {
                    // The first alternative that has the key decides; tagged enums share names.
                    let mut errors = None;
                    for candidate in &found {
                        match self.resolve_in(candidate, rest, depth + 1) {
                            Ok(ty) => return Ok(ty),
                            Err(e) => errors = errors.or(Some(e)),
                        }
                    }
                    return Err(errors.expect("at least one candidate"));
                }
                if open {
                    return Ok(Ty::Any);
                }
                known.sort();
                known.dedup();
                Err(Unresolved {
                    depth,
                    missing: key.clone(),
                    known,
                })
            }
            Segment::Index(_) | Segment::Each => {
                let items: Vec<&Value> = alternatives.iter().filter_map(|a| a.get("items")).collect();
                match items.first() {
                    Some(item) => {
                        let inner = self.resolve_in(item, rest, depth + 1)?;
                        Ok(if *first == Segment::Each { Ty::one("array") } else { inner })
                    }
                    None => match self.types_of(schema) {
                        Ty::Any => Ok(Ty::Any),
                        Ty::Of(types) if types.contains("array") => Ok(if *first == Segment::Each { Ty::one("array") } else { Ty::Any }),
                        _ => Err(Unresolved {
                            depth,
                            missing: match first {
                                Segment::Index(i) => i.to_string(),
                                _ => "*".into(),
                            },
                            known: Vec::new(),
                        }),
                    },
                }
            }
        }
    }
}

/// Whether a schema constrains nothing (`true`, `{}`, or only annotations such as a
/// description): any value, with any fields, fits.
fn is_open(schema: &Value) -> bool {
    const CONSTRAINTS: [&str; 10] = [
        "type",
        "properties",
        "items",
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "enum",
        "const",
        "additionalProperties",
    ];
    match schema {
        Value::Bool(b) => *b,
        Value::Object(map) => !CONSTRAINTS.iter().any(|k| map.contains_key(*k)),
        _ => false,
    }
}

fn static_name(t: &str) -> &'static str {
    match t {
        "null" => "null",
        "boolean" => "boolean",
        "integer" => "integer",
        "number" => "number",
        "string" => "string",
        "array" => "array",
        "object" => "object",
        _ => "",
    }
}

/// The known name closest to `wanted`, if it is close enough to be a typo.
pub(crate) fn did_you_mean<'n>(wanted: &str, known: impl IntoIterator<Item = &'n str>) -> Option<&'n str> {
    let wanted_len = wanted.chars().count();
    known
        .into_iter()
        // The distance is at least the difference in length, so names too long or too short
        // to be close are skipped: comparing costs time and memory proportional to the
        // product of the lengths, and a hostile name may be megabytes long.
        .filter(|k| wanted_len.abs_diff(k.chars().count()) <= 2.max(k.len() / 4))
        .map(|k| (strsim::damerau_levenshtein(wanted, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::node::path::FieldPath;

    fn resolve(schema: &Value, path: &str) -> Result<Ty, Unresolved> {
        SchemaView::new(schema).resolve(FieldPath::parse(path).unwrap().segments())
    }

    #[test]
    fn follows_properties_refs_options_and_arrays() {
        let schema = json!({
            "type": "object",
            "properties": {
                "record": {"$ref": "#/$defs/Rec"},
                "hits": {"type": "array", "items": {"$ref": "#/$defs/Rec"}},
                "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "filter": {"type": "object"}
            },
            "required": ["record"],
            "$defs": {"Rec": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}}
        });
        assert_eq!(resolve(&schema, "record.id").unwrap(), Ty::one("integer"));
        assert_eq!(resolve(&schema, "hits.*.name").unwrap(), Ty::one("array"));
        assert_eq!(resolve(&schema, "hits.0.name").unwrap(), Ty::one("string"));
        assert_eq!(resolve(&schema, "filter.a.$in").unwrap(), Ty::Any);
        let maybe = resolve(&schema, "maybe").unwrap();
        assert!(maybe.fits(&Ty::one("number")));
        let err = resolve(&schema, "record.nmae").unwrap_err();
        assert_eq!((err.depth, err.missing.as_str()), (1, "nmae"));
        assert_eq!(did_you_mean("nmae", err.known.iter().map(String::as_str)), Some("name"));
        assert_eq!(SchemaView::new(&schema).required(), BTreeSet::from(["record".to_string()]));
    }

    #[test]
    fn tagged_enums_require_what_every_variant_requires() {
        let schema = json!({"oneOf": [
            {"type": "object", "properties": {"op": {"const": "a"}, "id": {"type": "integer"}}, "required": ["op", "id"]},
            {"type": "object", "properties": {"op": {"const": "b"}, "id": {"type": "integer"}, "x": {"type": "string"}}, "required": ["op", "id", "x"]}
        ]});
        let view = SchemaView::new(&schema);
        assert_eq!(view.required(), BTreeSet::from(["id".to_string(), "op".to_string()]));
        assert_eq!(resolve(&schema, "x").unwrap(), Ty::one("string"));
        assert!(resolve(&schema, "y").is_err());
    }

    #[test]
    fn did_you_mean_skips_names_of_a_distant_length() {
        // Found by fuzzing: a megabyte-long node type was compared with every registered name
        // by edit distance, taking seconds and hundreds of megabytes per name.
        let long = "Q".repeat(1 << 20);
        assert_eq!(did_you_mean(&long, ["ProductCreateNode", "Switch"]), None);
        assert_eq!(
            did_you_mean("ProductCreatNode", ["ProductCreateNode", "Switch"]),
            Some("ProductCreateNode")
        );
        assert_eq!(did_you_mean("Swtch", ["ProductCreateNode", "Switch"]), Some("Switch"));
    }

    #[test]
    fn fits_allows_integer_into_number_but_not_string_into_integer() {
        assert!(Ty::one("integer").fits(&Ty::one("number")));
        assert!(!Ty::one("string").fits(&Ty::one("integer")));
        assert!(Ty::Any.fits(&Ty::one("integer")));
        assert!(Ty::one("string").fits(&Ty::Any));
    }
}
