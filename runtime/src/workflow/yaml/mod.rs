//! Declarative workflows: YAML files parsed (`tree`) into the same [`WorkflowDef`] the
//! builder makes, keeping the line and column of every key and value so each problem points
//! into the file (`diagnostic`): `classify.yaml:14:9: node 'similar' has no input 'qeury'
//! (did you mean 'query'?)`.

mod diagnostic;
mod tree;

use std::io::Read;
use std::path::Path;

use serde_path_to_error::Segment;

pub use diagnostic::{Diagnostic, Diagnostics, Position};
pub use tree::{Located, MAX_ALIASED_VALUES, parse};

use super::def::escape;
use super::{Problem, Workflow, WorkflowDef};
use crate::node::registry::Registry;

/// Largest workflow file read, in bytes (4 MiB): a larger file, or one that is not a regular
/// file (a device such as `/dev/zero`, a pipe), is refused before it is read.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// Reads, parses and validates the workflow file `path`.
pub fn load_file(path: impl AsRef<Path>, registry: &Registry) -> Result<Workflow, Diagnostics> {
    let path = path.as_ref();
    let fail = |message: String| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            position: None,
            pointer: String::new(),
            message,
            source_line: None,
        }])
    };
    let bytes = read_bounded(path).map_err(fail)?;
    let text = String::from_utf8(bytes).map_err(|e| fail(format!("not UTF-8: {e}")))?;
    load_str(&text, path, registry)
}

/// The bytes of the regular file `path` if it holds at most [`MAX_FILE_BYTES`]; else why not.
/// The size is checked before reading and the read is bounded too, since a file may grow (or
/// be replaced) between the two.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let too_large = |bytes: u64| format!("{bytes} bytes: a workflow file may hold at most {MAX_FILE_BYTES}");
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !metadata.is_file() {
        return Err("not a regular file: a workflow is read from a file, not a directory, device or pipe".into());
    }
    if metadata.len() > MAX_FILE_BYTES as u64 {
        return Err(too_large(metadata.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Parses and validates workflow YAML `text`; `file` names it in diagnostics.
pub fn load_str(text: &str, file: impl AsRef<Path>, registry: &Registry) -> Result<Workflow, Diagnostics> {
    let file = file.as_ref();
    // Collected once: a file with many problems would otherwise be scanned once per problem.
    let lines = source_lines(text);
    let diagnostic = |position: Option<Position>, pointer: String, message: String| Diagnostic {
        file: file.to_path_buf(),
        source_line: position
            .and_then(|p| lines.get(p.line.checked_sub(1)?))
            .map(|line| line.to_string()),
        position,
        pointer,
        message,
    };
    let located = parse(text).map_err(|(pos, message)| Diagnostics(vec![diagnostic(pos, String::new(), message)]))?;
    let mut def: WorkflowDef = match serde_path_to_error::deserialize(&located.value) {
        Ok(def) => def,
        Err(e) => return Err(Diagnostics(vec![structure_error(&located, e, &diagnostic)])),
    };
    // Keep nodes in the order they are written (the JSON map is sorted).
    def.nodes
        .sort_by_key(|(name, _)| located.position(&format!("/nodes/{}", escape(name))).map(|p| (p.line, p.column)));
    Workflow::build(def, registry).map_err(|problems| {
        Diagnostics(
            problems
                .iter()
                .map(|Problem { pointer, message }| {
                    let pos = if pointer.ends_with("/to") || pointer.ends_with("/from") || pointer.ends_with("/type") {
                        located.value_position(pointer)
                    } else {
                        located.position(pointer)
                    };
                    diagnostic(pos, pointer.clone(), message.clone())
                })
                .collect(),
        )
    })
}

/// The lines of `text` as YAML counts them, so positions find their line: a line ends at
/// LF, CRLF or a lone CR.
fn source_lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .flat_map(|line| line.strip_suffix('\r').unwrap_or(line).split('\r'))
        .collect()
}

/// Locates a serde error about the file's structure at the path it failed at: an unknown key
/// at that key, a bad value (`retry: {attempts: x}`) at its own key, a missing field at the
/// mapping that lacks it. An error about the document as a whole is placed at its start.
fn structure_error(
    located: &Located,
    error: serde_path_to_error::Error<serde_json::Error>,
    diagnostic: &dyn Fn(Option<Position>, String, String) -> Diagnostic,
) -> Diagnostic {
    let pointer: String = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(format!("/{index}")),
            Segment::Map { key } => Some(format!("/{}", escape(key))),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect();
    let position = located.position(&pointer).or_else(|| located.value_position(""));
    diagnostic(position, pointer, error.into_inner().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_where_yaml_ends_them() {
        // Found by fuzzing: with lone CRs as line breaks, a problem's line was past the lines
        // the excerpt looked in.
        assert_eq!(source_lines("a\r\nb\rc\r\r\nd\n"), ["a", "b", "c", "", "d", ""]);
        let err = load_str("name: x\rnodes:\r  a: {type: Nope}\r", "w.yaml", &Registry::new()).unwrap_err();
        let d = &err.0[0];
        assert_eq!(d.position.map(|p| p.line), Some(3));
        assert_eq!(d.source_line.as_deref(), Some("  a: {type: Nope}"));
    }

    #[test]
    fn a_document_of_the_wrong_shape_is_located() {
        // Found by fuzzing: a list or a mapping without `name` where the workflow belongs had
        // no line and column.
        let registry = Registry::new();
        for text in ["[]\n", "\n# comment\nnodes: {}\n"] {
            let err = load_str(text, "w.yaml", &registry).unwrap_err();
            assert!(err.0[0].position.is_some(), "{err}");
        }
    }
}
