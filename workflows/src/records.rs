//! Reading a catalogue file record by record: JSONL lines `{"model": M, "record": {...}}` (or
//! bare records of a default model) and CSV rows of one model, with the 1-based line of each
//! record, so that whoever reads the file holds one record at a time and can name the line of
//! every problem. `ReadRecords` collects the records; `ImportRecords` streams them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use dataflow_core::{FieldType, ModelMeta};
use serde_json::{Map, Value};

/// Longest JSONL line read, in bytes; a longer one is reported and skipped.
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// Why a line of a catalogue file (or the file's model) was not read; becomes the message of a
/// rejected line or the node's error.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file or a line names a model that is not shipped.
    #[error("unknown model '{name}': one of {known}")]
    UnknownModel {
        /// The name given.
        name: String,
        /// The shipped models.
        known: String,
    },
    /// A JSONL line longer than [`MAX_LINE_BYTES`].
    #[error("longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// A line that is not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// A JSONL line that is not JSON.
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// A JSONL line that is JSON but not an object.
    #[error("a line must be a JSON object")]
    NotAnObject,
    /// A line with a `model` tag but no `record` object.
    #[error("a tagged line needs \"model\" (a model name) and \"record\" (an object)")]
    BadTag,
    /// A CSV row with more or fewer cells than the header.
    #[error("{cells} cells for {columns} columns")]
    CellCount {
        /// Cells in the row.
        cells: usize,
        /// Columns in the header.
        columns: usize,
    },
    /// A CSV header column that is not a field of the model.
    #[error("CSV column '{column}' is not a field of {model}")]
    UnknownColumn {
        /// The column.
        column: String,
        /// The model.
        model: &'static str,
    },
    /// A CSV cell that is not of its field's type.
    #[error("{field}: '{cell}' is not {expected}")]
    BadCell {
        /// The field.
        field: String,
        /// The cell's text.
        cell: String,
        /// What the field takes.
        expected: &'static str,
    },
    /// A row the CSV reader could not read.
    #[error("{0}")]
    Csv(String),
    /// A CSV cell of a JSON field that is not JSON.
    #[error("{field}: not JSON: {source}")]
    CellNotJson {
        /// The field.
        field: String,
        /// Why it is not JSON.
        source: serde_json::Error,
    },
}

/// The shipped model called `name`.
pub fn model_meta(name: &str) -> Result<&'static ModelMeta, RecordError> {
    dataflow_models::all_models()
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| RecordError::UnknownModel {
            name: name.to_owned(),
            known: dataflow_models::all_models().iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
}

/// One record of a file, or why its line could not be read.
pub struct ReadLine {
    /// 1-based line (CSV: the record's first line; the header is line 1).
    pub line: usize,
    /// The record's model and fields.
    pub record: Result<(&'static ModelMeta, Value), RecordError>,
}

/// The records of a catalogue file, read as they are asked for.
pub enum Records {
    /// A `.jsonl` / `.ndjson` file.
    Jsonl {
        /// The file.
        reader: BufReader<File>,
        /// Lines read so far.
        line: usize,
        /// The model of lines without a `model` tag.
        default: &'static ModelMeta,
    },
    /// A `.csv` file of `model`, with a header of its field names.
    Csv {
        /// The rows.
        reader: csv::Reader<File>,
        /// The header's field names.
        header: Vec<String>,
        /// The model of every row.
        model: &'static ModelMeta,
    },
}

impl Records {
    /// Opens `path` (a regular file, so that a device is never read) as JSONL or CSV by its
    /// extension; `default` is the model of CSV rows and untagged JSONL lines.
    pub fn open(path: &Path, default: &'static ModelMeta) -> Result<Records, String> {
        let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let metadata = std::fs::metadata(path).map_err(cannot)?;
        if !metadata.is_file() {
            return Err(format!("cannot read {}: not a regular file", path.display()));
        }
        let file = File::open(path).map_err(cannot)?;
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match extension.as_str() {
            "jsonl" | "ndjson" => Ok(Records::Jsonl {
                reader: BufReader::with_capacity(1 << 16, file),
                line: 0,
                default,
            }),
            "csv" => {
                // The csv crate skips a UTF-8 byte-order mark before the header.
                let mut reader = csv::ReaderBuilder::new().from_reader(file);
                let header: Vec<String> = reader
                    .headers()
                    .map_err(|e| format!("CSV header: {e}"))?
                    .iter()
                    .map(str::to_string)
                    .collect();
                if let Some(column) = header.iter().find(|name| default.field(name).is_none()) {
                    return Err(RecordError::UnknownColumn {
                        column: column.clone(),
                        model: default.name,
                    }
                    .to_string());
                }
                Ok(Records::Csv {
                    reader,
                    header,
                    model: default,
                })
            }
            other => Err(format!(
                "cannot tell the format of {}: expected .jsonl, .ndjson or .csv, got '.{other}'",
                path.display()
            )),
        }
    }
}

impl Iterator for Records {
    /// A record or a line's problem; `Err` when the file itself cannot be read on.
    type Item = Result<ReadLine, String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Records::Jsonl { reader, line, default } => loop {
                let mut bytes = Vec::new();
                let read = match reader.by_ref().take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut bytes) {
                    Ok(0) => return None,
                    Ok(n) => n,
                    Err(e) => return Some(Err(format!("reading line {}: {e}", *line + 1))),
                };
                *line += 1;
                let record = if read > MAX_LINE_BYTES && bytes.last() != Some(&b'\n') {
                    // Skip the rest of the long line.
                    if let Err(e) = skip_line(reader) {
                        return Some(Err(format!("reading line {line}: {e}")));
                    }
                    Err(RecordError::TooLong)
                } else {
                    match std::str::from_utf8(&bytes) {
                        Err(_) => Err(RecordError::NotUtf8),
                        Ok(text) => {
                            // A byte-order mark (written by some editors) starts the first line.
                            let text = if *line == 1 { text.trim_start_matches('\u{feff}') } else { text };
                            if text.trim().is_empty() {
                                continue;
                            }
                            parse_jsonl_line(text, default)
                        }
                    }
                };
                return Some(Ok(ReadLine { line: *line, record }));
            },
            Records::Csv { reader, header, model } => {
                let mut row = csv::StringRecord::new();
                match reader.read_record(&mut row) {
                    Ok(false) => None,
                    Ok(true) => {
                        let line = row.position().map_or(0, |p| p.line() as usize);
                        Some(Ok(ReadLine {
                            line,
                            record: csv_record(header, &row, model).map(|r| (*model, r)),
                        }))
                    }
                    // A malformed row (the csv crate knows where); an I/O error ends the file.
                    Err(e) => match e.kind() {
                        csv::ErrorKind::Io(_) => Some(Err(format!("reading the CSV file: {e}"))),
                        _ => Some(Ok(ReadLine {
                            line: e.position().map_or(0, |p| p.line() as usize),
                            record: Err(RecordError::Csv(e.to_string())),
                        })),
                    },
                }
            }
        }
    }
}

/// Reads on to the end of the current line.
fn skip_line(reader: &mut BufReader<File>) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buffer.len();
                reader.consume(n);
            }
        }
    }
}

fn parse_jsonl_line(line: &str, default: &'static ModelMeta) -> Result<(&'static ModelMeta, Value), RecordError> {
    let value: Value = serde_json::from_str(line).map_err(RecordError::NotJson)?;
    let Value::Object(mut map) = value else {
        return Err(RecordError::NotAnObject);
    };
    match (map.remove("model"), map.remove("record")) {
        (Some(Value::String(model)), Some(record @ Value::Object(_))) => Ok((model_meta(&model)?, record)),
        (Some(_), _) => Err(RecordError::BadTag),
        (None, _) => Ok((default, Value::Object(map))),
    }
}

fn csv_record(header: &[String], row: &csv::StringRecord, meta: &'static ModelMeta) -> Result<Value, RecordError> {
    if row.len() != header.len() {
        return Err(RecordError::CellCount {
            cells: row.len(),
            columns: header.len(),
        });
    }
    let bad = |name: &str, cell: &str, expected| RecordError::BadCell {
        field: name.to_owned(),
        cell: cell.to_owned(),
        expected,
    };
    let mut record = Map::new();
    for (name, cell) in header.iter().zip(row.iter()) {
        let field = meta.field(name).ok_or_else(|| RecordError::UnknownColumn {
            column: name.clone(),
            model: meta.name,
        })?;
        let value = if cell.is_empty() && field.nullable {
            Value::Null
        } else {
            match field.ty {
                FieldType::Integer => cell
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| bad(name, cell, "an integer"))?,
                FieldType::Float => cell
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| bad(name, cell, "a number"))?,
                FieldType::Boolean => match cell.trim() {
                    "true" | "1" => Value::Bool(true),
                    "false" | "0" => Value::Bool(false),
                    _ => return Err(bad(name, cell, "true or false")),
                },
                FieldType::Json => serde_json::from_str(cell).map_err(|source| RecordError::CellNotJson {
                    field: name.clone(),
                    source,
                })?,
                FieldType::Text | FieldType::Timestamp => Value::String(cell.to_string()),
            }
        };
        record.insert(name.clone(), value);
    }
    Ok(Value::Object(record))
}
