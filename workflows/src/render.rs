//! What the command prints: tables (through comfy-table) and run reports, plain text that
//! reads the same on a terminal and in a log.

use comfy_table::{CellAlignment, ContentLineStyle, LineStyle, Table, TableStyle};
use dataflow_runtime::{NodeStatus, RunReport};

/// No borders; columns two spaces apart; the header underlined column by column.
const PLAIN: TableStyle = TableStyle::new()
    .header_lines(ContentLineStyle::none().junction(' '))
    .header_separator(LineStyle::none().fill('-').junction(' '))
    .content_lines(ContentLineStyle::none().junction(' '));

/// A table in [`PLAIN`] style, each column as wide as its widest cell.
fn plain(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(PLAIN).set_header(header.to_vec());
    let last = header.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        // One space of padding and the junction's make two between columns; none after the last.
        column.set_padding((0, u16::from(i < last)));
    }
    table
}

/// `rows` under `header`, each column as wide as its widest cell, two spaces apart, without
/// trailing spaces; ends with a newline.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = plain(header);
    table.add_rows(rows.iter().cloned());
    format!("{}\n", table.trim_fmt())
}

/// The word a report shows for a node's status.
pub fn status_word(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Succeeded => "ok",
        NodeStatus::Failed => "FAILED",
        NodeStatus::Skipped => "skipped",
        NodeStatus::Cancelled => "cancelled",
    }
}

/// A run's report as the command prints it: the run's status and duration, a row per node
/// (status, attempts, milliseconds, error), the outputs as JSON and the run's error.
pub fn report(report: &RunReport) -> String {
    let mut out = format!("{} {:?} in {:.1} ms\n", report.workflow, report.status, report.duration_ms);
    let mut nodes = plain(&["node", "type", "status", "attempts", "ms", "note"]);
    for n in &report.nodes {
        nodes.add_row(vec![
            n.name.clone(),
            n.node_type.clone(),
            status_word(n.status).to_owned(),
            n.attempts.to_string(),
            format!("{:.1}", n.duration_ms),
            n.error.clone().unwrap_or_default(),
        ]);
    }
    for numeric in [3, 4] {
        if let Some(column) = nodes.column_mut(numeric) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    out.push_str(&nodes.trim_fmt());
    out.push('\n');
    if !report.outputs.is_empty() {
        out.push_str("outputs:\n");
        for (name, value) in &report.outputs {
            let json = serde_json::to_string_pretty(value).unwrap_or_default();
            out.push_str(&format!("  {name}: {}\n", json.replace('\n', "\n  ")));
        }
    }
    if let Some(error) = &report.error {
        out.push_str(&format!("error: {error}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns_two_spaces_apart_without_trailing_spaces() {
        let shown = table(
            &["store", "backend", "where"],
            &[
                vec!["relational".into(), "sqlite".into(), "in a file".into()],
                vec!["cache".into(), "memory".into(), String::new()],
            ],
        );
        assert_eq!(
            shown,
            "store       backend  where\n\
             ----------- -------- ---------\n\
             relational  sqlite   in a file\n\
             cache       memory\n"
        );
    }
}
