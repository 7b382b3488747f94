//! What the command prints: tables (through comfy-table) and run reports, plain text that
//! reads the same on a terminal and in a log.

use std::time::Duration;

use comfy_table::{CellAlignment, ContentLineStyle, LineStyle, Table, TableStyle};
use dataflow_core::{Backlog, SyncReport};
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

/// `n` and `thing`, in the plural unless `n` is 1: `1 dead letter`, `2 dead letters`.
fn count(n: u64, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

/// A duration as a person reads it: `0.4 s`, `42 s`, `7 min`, `3.5 h`.
pub fn age(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 2.0 * 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// The outbox's backlog in words: `2 pending (the oldest written 4.1 s ago), 1 dead letter`.
pub fn backlog(backlog: &Backlog) -> String {
    let oldest = backlog
        .oldest_pending_age
        .filter(|_| backlog.pending > 0)
        .map(|a| format!(" (the oldest written {} ago)", age(a)))
        .unwrap_or_default();
    format!("{} pending{oldest}, {}", backlog.pending, count(backlog.dead, "dead letter"))
}

/// What `dataflow sync` did and what it left, as one sentence: `applied 12 outbox records;
/// 0 pending, 0 dead letters`, with the records that failed again when some did.
pub fn sync_summary(report: &SyncReport, after: &Backlog) -> String {
    let mut out = format!("applied {}", count(report.applied, "outbox record"));
    if report.failed > 0 {
        out.push_str(&format!(", {} failed again and wait for a retry", report.failed));
        if report.dead > 0 {
            out.push_str(&format!(" ({} now dead)", count(report.dead, "record")));
        }
    }
    out.push_str("; ");
    out.push_str(&backlog(after));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_is_summed_up_in_a_sentence() {
        let clean = SyncReport {
            applied: 12,
            ..SyncReport::default()
        };
        assert_eq!(
            sync_summary(&clean, &Backlog::default()),
            "applied 12 outbox records; 0 pending, 0 dead letters"
        );
        let troubled = SyncReport {
            applied: 1,
            failed: 3,
            dead: 1,
            remaining: 2,
        };
        let left = Backlog {
            pending: 2,
            oldest_pending_age: Some(Duration::from_millis(4_120)),
            dead: 1,
        };
        assert_eq!(
            sync_summary(&troubled, &left),
            "applied 1 outbox record, 3 failed again and wait for a retry (1 record now dead); \
             2 pending (the oldest written 4.1 s ago), 1 dead letter"
        );
    }

    #[test]
    fn ages_read_in_the_unit_that_fits() {
        assert_eq!(age(Duration::from_millis(400)), "0.4 s");
        assert_eq!(age(Duration::from_secs(42)), "42 s");
        assert_eq!(age(Duration::from_secs(7 * 60 + 10)), "7 min");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 1800)), "3.5 h");
    }

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
