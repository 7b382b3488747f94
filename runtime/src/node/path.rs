//! Field paths such as `record.id` or `hits.*.record.id`: parsing, reading a value out of a
//! node's output and writing one into a node's input.

use std::fmt;

use serde_json::{Map, Value};

/// Why a field path does not parse, or a value cannot be written at one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty field path")]
    Empty,
    /// Two dots in a row, or a dot at an end.
    #[error("field path '{0}' has an empty segment")]
    EmptySegment(String),
    /// A control character in the path.
    #[error("field path {0:?} contains a control character")]
    ControlCharacter(String),
    /// A key step runs into a value that is not an object.
    #[error("cannot set '{key}' inside a {found}")]
    NotAnObject {
        /// The key.
        key: String,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// An index step runs into a value that is not an array.
    #[error("cannot index a {0}")]
    NotAnArray(&'static str),
    /// An index past the end of the array.
    #[error("index {index} is past the end of an array of {len}")]
    PastTheEnd {
        /// The index.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// A write through `*`.
    #[error("'*' can only be read, not written")]
    WriteThroughEach,
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// An object key.
    Key(String),
    /// An array position.
    Index(usize),
    /// Every element of an array (`*`); only in source paths.
    Each,
}

/// A dot-separated path into a JSON value: keys, array positions and `*` for every element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    segments: Vec<Segment>,
}

impl FieldPath {
    /// Parses `a.b.0.c` or `hits.*.record.id`. Segments must be non-empty.
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        if text.is_empty() {
            return Err(PathError::Empty);
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            if part.is_empty() {
                return Err(PathError::EmptySegment(text.to_string()));
            }
            if part.chars().any(char::is_control) {
                return Err(PathError::ControlCharacter(text.to_string()));
            }
            segments.push(match part {
                "*" => Segment::Each,
                _ => match part.parse::<usize>() {
                    Ok(i) if !part.starts_with('+') => Segment::Index(i),
                    _ => Segment::Key(part.to_string()),
                },
            });
        }
        Ok(FieldPath { segments })
    }

    /// The path's steps.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first key, which names a top-level field.
    pub fn root(&self) -> &str {
        match &self.segments[0] {
            Segment::Key(k) => k,
            Segment::Index(_) | Segment::Each => "",
        }
    }

    /// Whether the path maps over arrays (`*`).
    pub fn has_each(&self) -> bool {
        self.segments.contains(&Segment::Each)
    }

    /// The value at this path, `None` where a step is missing. `*` collects the value of the
    /// rest of the path for every element, leaving out elements where it is missing.
    pub fn get(&self, value: &Value) -> Option<Value> {
        get(&self.segments, value)
    }

    /// Writes `new` at this path, creating objects on the way. Fails on `*`, on an index past
    /// the end of an array, or where a step runs into a scalar.
    pub fn set(&self, target: &mut Value, new: Value) -> Result<(), PathError> {
        let mut slot = target;
        for segment in &self.segments {
            slot = match segment {
                Segment::Key(key) => {
                    if slot.is_null() {
                        *slot = Value::Object(Map::new());
                    }
                    match slot {
                        Value::Object(map) => map.entry(key.clone()).or_insert(Value::Null),
                        other => {
                            return Err(PathError::NotAnObject {
                                key: key.clone(),
                                found: kind(other),
                            });
                        }
                    }
                }
                Segment::Index(i) => {
                    let len = match &*slot {
                        Value::Array(items) => items.len(),
                        other => return Err(PathError::NotAnArray(kind(other))),
                    };
                    if *i >= len {
                        return Err(PathError::PastTheEnd { index: *i, len });
                    }
                    &mut slot[*i]
                }
                Segment::Each => return Err(PathError::WriteThroughEach),
            };
        }
        *slot = new;
        Ok(())
    }
}

fn get(segments: &[Segment], value: &Value) -> Option<Value> {
    let Some((first, rest)) = segments.split_first() else {
        return Some(value.clone());
    };
    match first {
        Segment::Key(k) => get(rest, value.as_object()?.get(k)?),
        Segment::Index(i) => get(rest, value.as_array()?.get(*i)?),
        Segment::Each => Some(Value::Array(value.as_array()?.iter().filter_map(|item| get(rest, item)).collect())),
    }
}

/// A JSON value's type in words, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match s {
                Segment::Key(k) => f.write_str(k)?,
                Segment::Index(n) => write!(f, "{n}")?,
                Segment::Each => f.write_str("*")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_nested_fields_indexes_and_every_element() {
        let v = json!({"hits": [{"record": {"id": 1}}, {"record": {"id": 2}}, {"other": 3}], "n": 5});
        assert_eq!(FieldPath::parse("n").unwrap().get(&v), Some(json!(5)));
        assert_eq!(FieldPath::parse("hits.1.record.id").unwrap().get(&v), Some(json!(2)));
        assert_eq!(FieldPath::parse("hits.*.record.id").unwrap().get(&v), Some(json!([1, 2])));
        assert_eq!(FieldPath::parse("hits.9").unwrap().get(&v), None);
        assert_eq!(FieldPath::parse("n.x").unwrap().get(&v), None);
    }

    #[test]
    fn writes_create_objects_and_refuse_scalars_and_stars() {
        let mut v = json!({"record": {"name": "x"}});
        FieldPath::parse("record.id").unwrap().set(&mut v, json!(7)).unwrap();
        FieldPath::parse("filter.product_id.$in").unwrap().set(&mut v, json!([1])).unwrap();
        assert_eq!(v, json!({"record": {"name": "x", "id": 7}, "filter": {"product_id": {"$in": [1]}}}));
        assert!(FieldPath::parse("record.name.x").unwrap().set(&mut v, json!(1)).is_err());
        assert!(FieldPath::parse("a.*").unwrap().set(&mut v, json!(1)).is_err());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            FieldPath::parse("a..b").unwrap_err().to_string(),
            "field path 'a..b' has an empty segment"
        );
        let mut v = json!({"a": [1]});
        let err = FieldPath::parse("a.3").unwrap().set(&mut v, json!(1)).unwrap_err();
        assert_eq!(err.to_string(), "index 3 is past the end of an array of 1");
    }

    #[test]
    fn rejects_empty_segments() {
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse("a.").is_err());
    }
}
