//! Diagnostics of a workflow file: `file:line:column: message`, then the line quoted with a
//! caret under the column (a window of a long line).
//!
//! Rendered here rather than by `annotate-snippets` or `miette`: both open with `error:
//! message` and put the place on a second line (` --> file:line:column`), where the
//! `dataflow` command, its tests and editors that jump to `file:line:column:` expect the place
//! first; the excerpt itself is some forty lines.

use std::fmt;
use std::path::PathBuf;

use crate::node::{MAX_MESSAGE_CHARS, shorten};

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// One problem in a workflow file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// Where in it, when known.
    pub position: Option<Position>,
    /// JSON pointer into the definition (empty for syntax errors).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
    /// The source line, for the excerpt.
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: message`, then the line with a caret under the column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        let message = shorten(self.message.clone(), MAX_MESSAGE_CHARS);
        match self.position {
            Some(p) => write!(f, "{file}:{}:{}: {message}", p.line, p.column)?,
            None => write!(f, "{file}: {message}")?,
        }
        if let (Some(p), Some(line)) = (self.position, &self.source_line) {
            let gutter = p.line.to_string().len();
            let (line, caret) = excerpt(line, p.column);
            write!(
                f,
                "\n{:gutter$} |\n{} | {}\n{:gutter$} | {}^",
                "",
                p.line,
                line,
                "",
                " ".repeat(caret.saturating_sub(1))
            )?;
        }
        Ok(())
    }
}

/// Characters of a source line shown under a diagnostic, at most.
const EXCERPT_CHARS: usize = 120;

/// What of `line` a diagnostic shows: all of it when short, else [`EXCERPT_CHARS`] characters
/// around `column` (1-based, in characters) with `…` where it was cut; and the caret's column
/// in what is shown.
fn excerpt(line: &str, column: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= EXCERPT_CHARS {
        return (line.to_owned(), column);
    }
    let start = column.saturating_sub(1 + EXCERPT_CHARS / 2).min(chars.len() - EXCERPT_CHARS);
    let end = start + EXCERPT_CHARS;
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    (shown, column - start + usize::from(start > 0))
}

/// Every problem in one workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_shows_an_excerpt_around_the_column() {
        let line = format!("{}X{}", "a".repeat(500), "b".repeat(500));
        let (shown, caret) = excerpt(&line, 501);
        assert_eq!(shown.chars().count(), EXCERPT_CHARS + 2, "the excerpt and two ellipses");
        assert_eq!(shown.chars().nth(caret - 1), Some('X'), "the caret stays under the column");
        assert_eq!(excerpt("short", 3), ("short".to_owned(), 3));
        let (shown, caret) = excerpt(&line, 1);
        assert_eq!((shown.chars().next(), caret), (Some('a'), 1));
    }
}
