//! Filters and sorts as SQL: the condition of a checked [`Filter`], `ORDER BY` and the
//! keyset condition of a [`CheckedSort`]. Field names come from the model, values are bound.

use sea_orm::DbBackend;
use serde_json::Value as Json;

use crate::error::{Error, FieldErrors};
use crate::model::filter::{CheckedSort, Filter, MAX_FILTER_DEPTH, MAX_IN_LIST, MAX_PATTERN_CHARS, Op};
use crate::model::values::{check_type, printable, unknown_field_message};
use crate::model::{FieldMeta, FieldType, ModelMeta};
use crate::sql::Sql;
use crate::sql::to_sql;

impl Filter {
    /// The SQL condition this filter becomes on `backend`, values as placeholders: what a
    /// List, Update, Delete or Aggregate with it sends (for logs, and for tests of the
    /// translation). Checked against `meta` like `Filter::write_sql`.
    pub fn sql_condition(&self, meta: &'static ModelMeta, backend: DbBackend) -> Result<String, Error> {
        let mut sql = Sql::new(backend);
        self.write_sql(meta, &mut sql)?;
        Ok(sql.text().to_owned())
    }

    /// Checks the filter against `meta` and writes it as a SQL condition into `sql`.
    /// Every problem is reported at once; on error the statement must be discarded.
    pub(crate) fn write_sql(&self, meta: &'static ModelMeta, sql: &mut Sql) -> Result<(), Error> {
        let mut errors = FieldErrors::default();
        write_filter(self, meta, sql, &mut errors, 0);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(meta.name, "filter", errors.to_string()))
        }
    }
}

fn write_filter(filter: &Filter, meta: &'static ModelMeta, sql: &mut Sql, errors: &mut FieldErrors, depth: usize) {
    if depth > MAX_FILTER_DEPTH {
        errors.push("$", format!("filters nest deeper than {MAX_FILTER_DEPTH} levels"));
        return;
    }
    match filter {
        Filter::And(items) | Filter::Or(items) if items.is_empty() => {
            sql.push(if matches!(filter, Filter::And(_)) { "TRUE" } else { "FALSE" });
        }
        Filter::And(items) | Filter::Or(items) => {
            let joiner = if matches!(filter, Filter::And(_)) { " AND " } else { " OR " };
            sql.push("(");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sql.push(joiner);
                }
                write_filter(item, meta, sql, errors, depth + 1);
            }
            sql.push(")");
        }
        Filter::Not(inner) => {
            sql.push("NOT (");
            write_filter(inner, meta, sql, errors, depth + 1);
            sql.push(")");
        }
        Filter::Compare { field, op, value } => {
            let Some(f) = meta.field(field) else {
                errors.push(printable(field), unknown_field_message(meta, field));
                return;
            };
            if let Err(msg) = write_compare(f, *op, value, sql) {
                errors.push(f.name, format!("{}: {msg}", op.name()));
            }
        }
    }
}

fn write_compare(f: &'static FieldMeta, op: Op, value: &Json, sql: &mut Sql) -> Result<(), String> {
    let typed = |v: &Json| -> Result<Json, String> {
        if v.is_null() {
            return Err("the value must not be null (use $is_null)".into());
        }
        check_type(f, v).map_err(|m| format!("the value {m}"))
    };
    match op {
        Op::IsNull => {
            let Some(is_null) = value.as_bool() else {
                return Err("expects true or false".into());
            };
            sql.ident(f.name).push(if is_null { " IS NULL" } else { " IS NOT NULL" });
        }
        Op::Eq if value.is_null() => {
            sql.ident(f.name).push(" IS NULL");
        }
        Op::Ne if value.is_null() => {
            sql.ident(f.name).push(" IS NOT NULL");
        }
        Op::Eq | Op::Ne | Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            if f.ty == FieldType::Json {
                return Err("JSON fields can only be tested with $is_null".into());
            }
            if !matches!(op, Op::Eq | Op::Ne) && !f.ty.is_ordered() {
                return Err(format!("{} values are not ordered", f.ty.describe()));
            }
            let v = typed(value)?;
            sql.ident(f.name);
            match op {
                Op::Eq => sql.push(" = "),
                Op::Ne => sql.distinct_from(),
                Op::Gt => sql.push(" > "),
                Op::Gte => sql.push(" >= "),
                Op::Lt => sql.push(" < "),
                _ => sql.push(" <= "),
            };
            sql.param(to_sql(f.ty, &v));
        }
        Op::In | Op::Nin => {
            if f.ty == FieldType::Json {
                return Err("JSON fields can only be tested with $is_null".into());
            }
            let Json::Array(items) = value else {
                return Err("expects an array of values".into());
            };
            if items.len() > MAX_IN_LIST {
                return Err(format!("accepts at most {MAX_IN_LIST} values, got {}", items.len()));
            }
            let values = items.iter().map(typed).collect::<Result<Vec<_>, _>>()?;
            if values.is_empty() {
                sql.push(if op == Op::In { "FALSE" } else { "TRUE" });
                return Ok(());
            }
            sql.push("(").ident(f.name).push(if op == Op::In { " IN (" } else { " NOT IN (" });
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.param(to_sql(f.ty, v));
            }
            sql.push(")");
            if op == Op::Nin && f.nullable {
                sql.push(" OR ").ident(f.name).push(" IS NULL");
            }
            sql.push(")");
        }
        Op::Contains | Op::StartsWith => {
            if f.ty != FieldType::Text {
                return Err("applies to text fields only".into());
            }
            let Some(text) = value.as_str() else {
                return Err("expects a string".into());
            };
            typed(value)?;
            let length = text.chars().count();
            if length > MAX_PATTERN_CHARS {
                return Err(format!("accepts at most {MAX_PATTERN_CHARS} characters, got {length}"));
            }
            let mut pattern = String::with_capacity(text.len() + 2);
            if op == Op::Contains {
                pattern.push('%');
            }
            for c in text.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            sql.ident(f.name)
                .push(" LIKE ")
                .param(sea_orm::Value::String(Some(pattern)))
                .push(" ESCAPE '\\'");
        }
    }
    Ok(())
}

impl CheckedSort {
    /// Writes `ORDER BY ...`.
    pub(crate) fn write_order_by(&self, sql: &mut Sql) {
        sql.push(" ORDER BY ");
        for (i, (f, desc)) in self.keys.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.ident(f.name).push(if *desc { " DESC" } else { " ASC" });
        }
    }

    /// The keyset condition "after the row of `cursor`" on `backend`, values as placeholders
    /// (see [`CheckedSort::decode_cursor`]).
    pub fn after_condition(&self, meta: &'static ModelMeta, cursor: &str, backend: DbBackend) -> Result<String, Error> {
        let mut sql = Sql::new(backend);
        self.write_after(meta, cursor, &mut sql)?;
        Ok(sql.text().to_owned())
    }

    /// Decodes a cursor made by [`CheckedSort::cursor_after`] for this same sort and writes the
    /// keyset condition "after that row".
    pub(crate) fn write_after(&self, meta: &'static ModelMeta, cursor: &str, sql: &mut Sql) -> Result<(), Error> {
        let typed = self.decode_cursor(meta, cursor)?;
        // (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ... with < for descending keys.
        sql.push("(");
        for i in 0..self.keys.len() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push("(");
            for (j, ((f, desc), v)) in self.keys.iter().zip(&typed).enumerate().take(i + 1) {
                if j > 0 {
                    sql.push(" AND ");
                }
                let op = if j < i {
                    " = "
                } else if *desc {
                    " < "
                } else {
                    " > "
                };
                sql.ident(f.name).push(op).param(to_sql(f.ty, v));
            }
            sql.push(")");
        }
        sql.push(")");
        Ok(())
    }
}
