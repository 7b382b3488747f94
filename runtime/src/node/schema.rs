//! Reading node schemas (JSON Schema as schemars writes it): the type found at a field path
//! (null included where a value on the way may be null), the required top-level inputs,
//! whether an output type fits an input type, and where a static value does not fit a schema.
//! Used by workflow validation; nothing here runs a node.

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

    /// Whether a value of this type may be null (or missing, which a connection delivers the
    /// same way: not at all). `Any` says nothing, so it may not.
    pub fn may_be_null(&self) -> bool {
        matches!(self, Ty::Of(set) if set.contains("null"))
    }

    /// Whether null is a value of this type; `Any` takes it.
    pub fn takes_null(&self) -> bool {
        match self {
            Ty::Any => true,
            Ty::Of(set) => set.contains("null"),
        }
    }

    /// This type, or null.
    pub fn or_null(self) -> Ty {
        match self {
            Ty::Any => Ty::Any,
            Ty::Of(mut set) => {
                set.insert("null");
                Ty::Of(set)
            }
        }
    }

    /// Whether a value of JSON type `found` (one of the names [`Ty::named`] knows) is one of
    /// this type: null only where null is named, an integer where a number is.
    pub fn admits(&self, found: &str) -> bool {
        match self {
            Ty::Any => true,
            Ty::Of(set) => set.contains(found) || (found == "integer" && set.contains("number")),
        }
    }

    /// Whether a value of type `self` can be given where `target` is expected, its null aside
    /// (that is [`Ty::may_be_null`] against [`Ty::takes_null`], a separate problem with its own
    /// remedy); an integer fits a number.
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

    /// The type at `path`, or where the path leaves the schema. The type includes null when a
    /// value on the way may be null: `record.id` of a `record` that may be null may be null.
    pub fn resolve(&self, path: &[Segment]) -> Result<Ty, Unresolved> {
        self.resolve_in(self.root, path, 0)
    }

    /// Where `value` does not fit the schema, every misfit found (none when it fits).
    /// `supplied(path)` says whether the value at `path` (a missing required key) comes from
    /// elsewhere, such as a connection, so its absence here is not a misfit. Only what the
    /// schema states is checked: types, enumerations, bounds, keys.
    pub fn check(&self, value: &Value, supplied: &dyn Fn(&[Segment]) -> bool) -> Vec<Misfit> {
        let mut at = Vec::new();
        let mut misfits = Vec::new();
        self.check_in(self.root, value, &mut at, supplied, &mut misfits, 0);
        misfits
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
        if path.is_empty() {
            return Ok(self.types_of(schema));
        }
        let ty = self.resolve_step(schema, path, depth)?;
        // A step into a value that may be null finds nothing: what is there may be null too.
        Ok(if self.types_of(schema).may_be_null() { ty.or_null() } else { ty })
    }

    /// [`Self::resolve_in`] of a non-empty path, before the nullability of `schema` itself.
    fn resolve_step(&self, schema: &'a Value, path: &[Segment], depth: usize) -> Result<Ty, Unresolved> {
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

/// Deepest nesting of a value [`SchemaView::check`] follows; past it, values are left to the
/// node's own check when it runs.
const MAX_CHECK_DEPTH: usize = 64;

/// One way a value does not fit a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    /// Where, from the checked value: the keys and positions of the offending value (for
    /// [`MisfitKind::Missing`], of the object that lacks the key).
    pub at: Vec<Segment>,
    /// What is wrong there.
    pub kind: MisfitKind,
}

/// What is wrong with a value, for a [`Misfit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MisfitKind {
    /// The value's JSON type is not one the schema admits.
    WrongType {
        /// What the schema admits.
        expected: Ty,
        /// The value's type.
        found: &'static str,
    },
    /// A key the object may not have.
    UnknownKey {
        /// The keys it may have, for "did you mean".
        known: Vec<String>,
    },
    /// Keys the object must have.
    Missing {
        /// The keys, in the schema's order.
        keys: Vec<String>,
    },
    /// A value of the right type the schema does not allow: says which values it does.
    NotAllowed(String),
}

impl<'a> SchemaView<'a> {
    fn check_in(
        &self,
        schema: &'a Value,
        value: &Value,
        at: &mut Vec<Segment>,
        supplied: &dyn Fn(&[Segment]) -> bool,
        out: &mut Vec<Misfit>,
        depth: usize,
    ) {
        if depth > MAX_CHECK_DEPTH {
            return;
        }
        let schema = self.deref(schema);
        let misfit = |at: &[Segment], kind| Misfit { at: at.to_vec(), kind };
        match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(misfit(at, MisfitKind::NotAllowed("is not allowed here".into())));
                return;
            }
            _ => {}
        }
        let found = super::path::kind(value);
        let admitted = match schema.get("type") {
            Some(Value::String(t)) => Some(Ty::one(static_name(t))),
            Some(Value::Array(ts)) => Some(Ty::Of(ts.iter().filter_map(Value::as_str).map(static_name).collect())),
            _ => None,
        };
        if let Some(expected) = admitted
            && !expected.admits(found)
        {
            out.push(misfit(at, MisfitKind::WrongType { expected, found }));
            return;
        }
        if let Some(c) = schema.get("const")
            && c != value
        {
            out.push(misfit(at, MisfitKind::NotAllowed(format!("must be {c}"))));
            return;
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array)
            && !values.contains(value)
        {
            let listed: Vec<String> = values.iter().map(Value::to_string).collect();
            out.push(misfit(at, MisfitKind::NotAllowed(format!("must be one of {}", listed.join(", ")))));
            return;
        }
        for branches in ["anyOf", "oneOf"].iter().filter_map(|k| schema.get(*k).and_then(Value::as_array)) {
            self.check_alternatives(branches, value, at, supplied, out, depth);
        }
        for branch in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            self.check_in(branch, value, at, supplied, out, depth + 1);
        }
        match value {
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(0.0);
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                    && n < min
                {
                    out.push(misfit(at, MisfitKind::NotAllowed(format!("must be at least {min}"))));
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                    && n > max
                {
                    out.push(misfit(at, MisfitKind::NotAllowed(format!("must be at most {max}"))));
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, element) in items.iter().enumerate() {
                        at.push(Segment::Index(i));
                        self.check_in(item, element, at, supplied, out, depth + 1);
                        at.pop();
                    }
                }
            }
            Value::Object(map) => self.check_object(schema, map, at, supplied, out, depth),
            _ => {}
        }
    }

    /// The keys of object `map` against `schema`'s `properties`, `additionalProperties` and
    /// `required`.
    fn check_object(
        &self,
        schema: &'a Value,
        map: &serde_json::Map<String, Value>,
        at: &mut Vec<Segment>,
        supplied: &dyn Fn(&[Segment]) -> bool,
        out: &mut Vec<Misfit>,
        depth: usize,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, element) in map {
            at.push(Segment::Key(key.clone()));
            match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                (Some(property), _) => self.check_in(property, element, at, supplied, out, depth + 1),
                (None, Some(Value::Bool(false))) => out.push(Misfit {
                    at: at.clone(),
                    kind: MisfitKind::UnknownKey {
                        known: properties.map(|p| p.keys().cloned().collect()).unwrap_or_default(),
                    },
                }),
                (None, Some(extra)) => self.check_in(extra, element, at, supplied, out, depth + 1),
                (None, None) => {}
            }
            at.pop();
        }
        let mut missing = Vec::new();
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if map.contains_key(key) {
                continue;
            }
            at.push(Segment::Key(key.to_string()));
            let elsewhere = supplied(at);
            at.pop();
            if !elsewhere {
                missing.push(key.to_string());
            }
        }
        if !missing.is_empty() {
            out.push(Misfit {
                at: at.clone(),
                kind: MisfitKind::Missing { keys: missing },
            });
        }
    }

    /// `value` against alternatives (`anyOf`, `oneOf`): nothing when one of them fits, else
    /// the misfits of the alternative the value was most likely meant for. Tagged alternatives
    /// (each an object with a `const` property, as serde's tagged enums are) are chosen by
    /// their tag; others by the value's JSON type, then by the fewest misfits.
    fn check_alternatives(
        &self,
        branches: &'a [Value],
        value: &Value,
        at: &mut Vec<Segment>,
        supplied: &dyn Fn(&[Segment]) -> bool,
        out: &mut Vec<Misfit>,
        depth: usize,
    ) {
        let mut tried: Vec<(&'a Value, Vec<Misfit>)> = Vec::with_capacity(branches.len());
        for branch in branches {
            let mut misfits = Vec::new();
            self.check_in(branch, value, at, supplied, &mut misfits, depth + 1);
            if misfits.is_empty() {
                return;
            }
            tried.push((self.deref(branch), misfits));
        }
        if let (Some(tag), Value::Object(map)) = (self.tag_of(branches), value) {
            let tags: Vec<&Value> = tried.iter().filter_map(|(b, _)| self.tag_value(b, &tag)).collect();
            match map.get(&tag) {
                Some(given) if !tags.contains(&given) => {
                    let listed: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
                    at.push(Segment::Key(tag.clone()));
                    out.push(Misfit {
                        at: at.clone(),
                        kind: MisfitKind::NotAllowed(format!("must be one of {}", listed.join(", "))),
                    });
                    at.pop();
                    // No branch is chosen, but what is wrong whichever branch the caller meant
                    // is said too: a key no branch knows (when every branch refuses other keys),
                    // a value that fits none of the branches that know its key.
                    let closed = tried
                        .iter()
                        .all(|(b, _)| b.get("additionalProperties") == Some(&Value::Bool(false)));
                    let known: BTreeSet<String> = tried
                        .iter()
                        .filter_map(|(b, _)| b.get("properties").and_then(Value::as_object))
                        .flat_map(|p| p.keys().cloned())
                        .collect();
                    for (key, element) in map.iter().filter(|(k, _)| **k != tag) {
                        at.push(Segment::Key(key.clone()));
                        let schemas: Vec<&'a Value> = tried
                            .iter()
                            .filter_map(|(b, _)| b.get("properties").and_then(|p| p.get(key)))
                            .collect();
                        if schemas.is_empty() {
                            if closed {
                                out.push(Misfit {
                                    at: at.clone(),
                                    kind: MisfitKind::UnknownKey {
                                        known: known.iter().cloned().collect(),
                                    },
                                });
                            }
                        } else {
                            let mut first: Option<Vec<Misfit>> = None;
                            for schema in schemas {
                                let mut misfits = Vec::new();
                                self.check_in(schema, element, at, supplied, &mut misfits, depth + 1);
                                if misfits.is_empty() {
                                    first = None;
                                    break;
                                }
                                first.get_or_insert(misfits);
                            }
                            out.extend(first.unwrap_or_default());
                        }
                        at.pop();
                    }
                    return;
                }
                Some(given) => {
                    let chosen = tried.into_iter().find(|(b, _)| self.tag_value(b, &tag) == Some(given));
                    out.extend(chosen.map(|(_, m)| m).unwrap_or_default());
                    return;
                }
                None => {}
            }
        }
        let found = super::path::kind(value);
        let (shaped, other): (Vec<_>, Vec<_>) = tried.into_iter().partition(|(b, _)| self.types_of(b).admits(found));
        match shaped.into_iter().min_by_key(|(_, m)| m.len()) {
            Some((_, misfits)) => out.extend(misfits),
            None => {
                let expected = other
                    .iter()
                    .fold(Ty::Of(BTreeSet::new()), |acc, (b, _)| match (acc, self.types_of(b)) {
                        (Ty::Of(mut a), Ty::Of(b)) => {
                            a.extend(b);
                            Ty::Of(a)
                        }
                        _ => Ty::Any,
                    });
                out.push(Misfit {
                    at: at.clone(),
                    kind: MisfitKind::WrongType { expected, found },
                });
            }
        }
    }

    /// The key that tells tagged alternatives apart: a property every one of them holds as a
    /// `const`.
    fn tag_of(&self, branches: &'a [Value]) -> Option<String> {
        let first = self.deref(branches.first()?);
        let keys = first.get("properties")?.as_object()?;
        keys.keys()
            .find(|k| branches.iter().all(|b| self.tag_value(b, k).is_some()))
            .cloned()
    }

    /// The `const` that alternative `branch` holds at property `tag`.
    fn tag_value(&self, branch: &'a Value, tag: &str) -> Option<&'a Value> {
        let property = self.deref(branch).get("properties")?.get(tag)?;
        self.deref(property).get("const")
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
    fn a_path_through_a_value_that_may_be_null_may_be_null() {
        let schema = json!({
            "type": "object",
            "properties": {
                "record": {"anyOf": [{"$ref": "#/$defs/Rec"}, {"type": "null"}]},
                "always": {"$ref": "#/$defs/Rec"}
            },
            "$defs": {"Rec": {"type": "object", "properties": {"id": {"type": "integer"}}}}
        });
        assert!(resolve(&schema, "record.id").unwrap().may_be_null());
        assert!(!resolve(&schema, "always.id").unwrap().may_be_null());
        assert!(resolve(&schema, "record").unwrap().may_be_null());
        assert!(!Ty::Any.may_be_null() && Ty::Any.takes_null());
    }

    #[test]
    fn check_finds_every_misfit_and_leaves_supplied_keys_alone() {
        let schema = json!({
            "type": "object",
            "properties": {
                "record": {"$ref": "#/$defs/Rec"},
                "limit": {"type": ["integer", "null"], "minimum": 0},
                "sort": {"type": "array", "items": {"anyOf": [
                    {"type": "string"},
                    {"type": "object", "properties": {"field": {"type": "string"}, "descending": {"type": "boolean"}}, "required": ["field"], "additionalProperties": false}
                ]}}
            },
            "required": ["record"],
            "additionalProperties": false,
            "$defs": {"Rec": {"type": "object", "properties": {"name": {"type": "string"}, "price": {"type": "number"}, "id": {"type": "integer"}}, "required": ["name", "price", "id"], "additionalProperties": false}}
        });
        let view = SchemaView::new(&schema);
        let key = |k: &str| Segment::Key(k.into());
        let record_id = [key("record"), key("id")];
        // Top-level keys and `record.id` come from elsewhere.
        let supplied = |path: &[Segment]| path.len() == 1 || path == record_id.as_slice();
        let value =
            json!({"record": {"name": 5, "colour": "red"}, "limit": null, "sort": ["-price", {"field": "price", "descending": "yes"}]});
        let misfits = view.check(&value, &supplied);
        let found: Vec<(Vec<Segment>, MisfitKind)> = misfits.into_iter().map(|m| (m.at, m.kind)).collect();
        assert_eq!(
            found,
            [
                (
                    vec![key("record"), key("colour")],
                    MisfitKind::UnknownKey {
                        known: vec!["id".into(), "name".into(), "price".into()]
                    }
                ),
                (
                    vec![key("record"), key("name")],
                    MisfitKind::WrongType {
                        expected: Ty::one("string"),
                        found: "integer"
                    }
                ),
                (
                    vec![key("record")],
                    MisfitKind::Missing {
                        keys: vec!["price".into()]
                    }
                ),
                (
                    vec![key("sort"), Segment::Index(1), key("descending")],
                    MisfitKind::WrongType {
                        expected: Ty::one("boolean"),
                        found: "string"
                    }
                ),
            ]
        );
        let misfits = view.check(&json!({"limit": -1, "sort": [3]}), &supplied);
        let kinds: Vec<MisfitKind> = misfits.into_iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                MisfitKind::NotAllowed("must be at least 0".into()),
                MisfitKind::WrongType {
                    expected: Ty::Of(BTreeSet::from(["object", "string"])),
                    found: "integer"
                },
            ]
        );
    }

    #[test]
    fn check_picks_the_alternative_a_tag_names() {
        let schema = json!({"oneOf": [
            {"type": "object", "properties": {"op": {"type": "string", "const": "link"}, "id": {"type": "integer"}}, "required": ["op", "id"], "additionalProperties": false},
            {"type": "object", "properties": {"op": {"type": "string", "const": "path"}, "depth": {"type": "integer"}}, "required": ["op"], "additionalProperties": false}
        ]});
        let view = SchemaView::new(&schema);
        let top_level = |path: &[Segment]| path.len() == 1;
        assert!(
            view.check(&json!({"op": "link"}), &top_level).is_empty(),
            "`id` may come from a connection"
        );
        let misfits = view.check(&json!({"op": "path", "depth": "deep"}), &top_level);
        assert_eq!(misfits.len(), 1);
        assert_eq!(misfits[0].at, [Segment::Key("depth".into())]);
        let misfits = view.check(&json!({"op": "lnk"}), &top_level);
        assert_eq!(misfits[0].kind, MisfitKind::NotAllowed("must be one of \"link\", \"path\"".into()));
    }

    #[test]
    fn fits_allows_integer_into_number_but_not_string_into_integer() {
        assert!(Ty::one("integer").fits(&Ty::one("number")));
        assert!(!Ty::one("string").fits(&Ty::one("integer")));
        assert!(Ty::Any.fits(&Ty::one("integer")));
        assert!(Ty::one("string").fits(&Ty::Any));
    }
}
