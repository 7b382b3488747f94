//! YAML text to a JSON tree that remembers where every key and value is written, from
//! `saphyr-parser`'s events.
//!
//! Our own rather than `saphyr`'s `MarkedYaml` loader: that loader copies every alias as it
//! goes with no bound (a few lines of nested aliases expand to billions of values before a
//! caller could count them), keeps the last of duplicate keys where a workflow file must be
//! refused, and has no depth limit; and a tree of `MarkedYaml` nodes would still have to be
//! walked into JSON with a pointer → position map. Here the walk over the events does all of
//! it in one pass.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use super::Position;
use crate::workflow::def::escape;

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;
/// Most values the aliases of a document may copy in all. Without a bound, a few lines of
/// nested aliases ("billion laughs") expand to billions of values.
pub const MAX_ALIASED_VALUES: usize = 1_000_000;

/// A YAML document as JSON, with the position of every key and value by JSON pointer.
#[derive(Debug, Default)]
pub struct Located {
    /// The document.
    pub value: Value,
    keys: HashMap<String, Position>,
    values: HashMap<String, Position>,
    /// Values made so far, aliases counted by the size of what they copy.
    made: usize,
    /// Values copied by aliases so far.
    copied: usize,
}

impl Located {
    /// Where `pointer` is written: its key if it has one, else its value, else the nearest
    /// enclosing item that is located.
    pub fn position(&self, pointer: &str) -> Option<Position> {
        let mut p = pointer.to_string();
        loop {
            if let Some(pos) = self.keys.get(&p).or_else(|| self.values.get(&p)) {
                return Some(*pos);
            }
            let cut = p.rfind('/')?;
            p.truncate(cut);
        }
    }

    /// Where the value at `pointer` is written.
    pub fn value_position(&self, pointer: &str) -> Option<Position> {
        self.values.get(pointer).copied().or_else(|| self.position(pointer))
    }
}

fn position(span: &Span) -> Position {
    Position {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

/// Parses one YAML document (YAML 1.2 core schema: plain `null`, `true`, integers and floats
/// are typed, quoted scalars are strings) into JSON with positions. Anchors and aliases work;
/// duplicate keys, non-string keys, tags other than the standard ones and several documents
/// are errors.
pub fn parse(text: &str) -> Result<Located, (Option<Position>, String)> {
    let mut parser = Parser::new_from_str(text);
    let mut located = Located::default();
    let mut anchors: HashMap<usize, Anchor> = HashMap::new();
    let mut next = || -> Result<(Event<'_>, Span), (Option<Position>, String)> {
        match parser.next() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err((
                Some(Position {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                }),
                e.info().to_string(),
            )),
            None => Err((None, "unexpected end of input".into())),
        }
    };
    let mut documents = 0;
    loop {
        let (event, span) = next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err((Some(position(&span)), "a workflow file holds one YAML document".into()));
                }
                let (event, span) = next()?;
                located.value = node(event, span, &mut next, &mut located, &mut anchors, "", 0)?;
            }
            _ => return Err((Some(position(&span)), "unexpected YAML event".into())),
        }
    }
    Ok(located)
}

type Next<'a, 'i> = dyn FnMut() -> Result<(Event<'i>, Span), (Option<Position>, String)> + 'a;

/// An anchored value and how many values it holds, so an alias to it can be counted
/// against [`MAX_ALIASED_VALUES`] before it is copied.
struct Anchor {
    value: Value,
    size: usize,
}

fn node<'i>(
    event: Event<'i>,
    span: Span,
    next: &mut Next<'_, 'i>,
    located: &mut Located,
    anchors: &mut HashMap<usize, Anchor>,
    pointer: &str,
    depth: usize,
) -> Result<Value, (Option<Position>, String)> {
    if depth > MAX_DEPTH {
        return Err((Some(position(&span)), format!("nested deeper than {MAX_DEPTH} levels")));
    }
    located.values.insert(pointer.to_string(), position(&span));
    let made_before = located.made;
    let (value, anchor) = match event {
        Event::Scalar(text, style, anchor, tag) => {
            located.made += 1;
            let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
            (
                scalar(&text, style, tag.as_deref()).map_err(|m| (Some(position(&span)), m))?,
                anchor,
            )
        }
        Event::Alias(id) => {
            let anchor = anchors
                .get(&id)
                .ok_or_else(|| (Some(position(&span)), "alias to an unknown anchor".to_string()))?;
            located.copied = located.copied.saturating_add(anchor.size);
            if located.copied > MAX_ALIASED_VALUES {
                return Err((Some(position(&span)), format!("aliases copy more than {MAX_ALIASED_VALUES} values")));
            }
            located.made += anchor.size;
            (anchor.value.clone(), 0)
        }
        Event::SequenceStart(anchor, _) => {
            located.made += 1;
            let mut items = Vec::new();
            loop {
                let (event, span) = next()?;
                if matches!(event, Event::SequenceEnd) {
                    break;
                }
                let item_pointer = format!("{pointer}/{}", items.len());
                items.push(node(event, span, next, located, anchors, &item_pointer, depth + 1)?);
            }
            (Value::Array(items), anchor)
        }
        Event::MappingStart(anchor, _) => {
            located.made += 1;
            let mut map = Map::new();
            loop {
                let (event, key_span) = next()?;
                let (key, style) = match event {
                    Event::MappingEnd => break,
                    Event::Scalar(text, style, ..) => (text.into_owned(), style),
                    _ => return Err((Some(position(&key_span)), "mapping keys must be plain strings".into())),
                };
                // Only a plain `<<` is a merge key; a quoted one is an ordinary string.
                if key == "<<" && style == ScalarStyle::Plain {
                    return Err((Some(position(&key_span)), "merge keys (<<) are not supported".into()));
                }
                let child = format!("{pointer}/{}", escape(&key));
                if map.contains_key(&key) {
                    return Err((Some(position(&key_span)), format!("duplicate key '{key}'")));
                }
                located.keys.insert(child.clone(), position(&key_span));
                let (event, span) = next()?;
                let value = node(event, span, next, located, anchors, &child, depth + 1)?;
                map.insert(key, value);
            }
            (Value::Object(map), anchor)
        }
        _ => return Err((Some(position(&span)), "unexpected YAML event".into())),
    };
    if anchor > 0 {
        let size = located.made - made_before;
        anchors.insert(
            anchor,
            Anchor {
                value: value.clone(),
                size,
            },
        );
    }
    Ok(value)
}

fn scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    match tag {
        None => {}
        Some("!!str") | Some("tag:yaml.org,2002:str") => return Ok(Value::String(text.into())),
        Some(other) => return Err(format!("unsupported tag '{other}'")),
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.into()));
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        ".inf" | "-.inf" | "+.inf" | ".nan" | ".NaN" | ".Inf" | "-.Inf" => return Err(format!("'{text}' is not a number JSON can hold")),
        _ => {
            let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                match text.parse::<i64>() {
                    Ok(i) => Value::Number(i.into()),
                    Err(_) => return Err(format!("integer '{text}' does not fit 64 bits")),
                }
            } else if looks_float(digits) {
                match text.parse::<f64>().ok().and_then(Number::from_f64) {
                    Some(n) => Value::Number(n),
                    None => Value::String(text.into()),
                }
            } else {
                Value::String(text.into())
            }
        }
    })
}

fn looks_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = {
        let mut parts = mantissa.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let frac = parts.next();
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        digits(whole)
            && frac.is_none_or(digits)
            && (!whole.is_empty() || frac.is_some_and(|f| !f.is_empty()))
            && (frac.is_some() || exponent.is_some())
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scalars_follow_the_core_schema() {
        let doc = parse("a: 1\nb: -2.5\nc: 'x'\nd: true\ne: ~\nf: 1e3\ng: 0.5.1\nh: \"3\"\ni: .5\n").unwrap();
        assert_eq!(
            doc.value,
            json!({"a": 1, "b": -2.5, "c": "x", "d": true, "e": null, "f": 1000.0, "g": "0.5.1", "h": "3", "i": 0.5})
        );
    }

    #[test]
    fn keys_and_values_are_located() {
        let doc = parse("name: x\nnodes:\n  a:\n    type: T\n    params:\n      qeury: hi\n").unwrap();
        assert_eq!(doc.position("/nodes/a/params/qeury"), Some(Position { line: 6, column: 7 }));
        assert_eq!(doc.value_position("/nodes/a/type"), Some(Position { line: 4, column: 11 }));
        assert_eq!(doc.position("/nodes/a/params/qeury/deeper"), Some(Position { line: 6, column: 7 }));
    }

    #[test]
    fn anchors_resolve_and_duplicates_and_bad_syntax_are_errors() {
        let doc = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(doc.value["b"], json!({"k": 1}));
        let (pos, message) = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!((pos.unwrap().line, message.as_str()), (2, "duplicate key 'a'"));
        assert!(parse("a: [1, 2\n").is_err());
        assert!(parse("a: .nan\n").is_err());
        assert!(parse("a: 99999999999999999999\n").is_err());
    }

    #[test]
    fn only_a_plain_double_angle_is_a_merge_key() {
        // Found by fuzzing: a quoted "<<" key was refused as a merge key.
        assert_eq!(parse("\"<<\": 1\n'<<': 2\n").unwrap_err().1, "duplicate key '<<'");
        assert_eq!(parse("\"<<\": 1\n").unwrap().value, json!({"<<": 1}));
        assert!(parse("<<: {a: 1}\n").unwrap_err().1.starts_with("merge keys"));
    }

    #[test]
    fn aliases_cannot_expand_without_bound() {
        // Found by fuzzing: nine lines of nested aliases ("billion laughs") expanded to 10^9
        // values; seven took seconds and gigabytes.
        let mut text = String::from("l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
        for level in 1..9 {
            let refs = vec![format!("*l{}", level - 1); 10].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
        }
        let (pos, message) = parse(&text).unwrap_err();
        assert_eq!(message, format!("aliases copy more than {MAX_ALIASED_VALUES} values"));
        assert_eq!(pos.map(|p| p.line), Some(6));
        // Anchors used within the bound still work.
        let doc = parse("a: &a [1, 2]\nb: &b [*a, *a]\nc: [*b, *b]\n").unwrap();
        assert_eq!(doc.value["c"], json!([[[1, 2], [1, 2]], [[1, 2], [1, 2]]]));
    }
}
