//! Filters, sorting and keyset cursors: a typed Rust builder, a JSON form, and their
//! translation to SQL after every field name, operator and value is checked against the model.
//!
//! JSON form: `{"price": {"$gte": 10}, "active": true, "$or": [{...}, {...}], "$not": {...}}`.
//! A bare value means `$eq`; several operators on one field are all required.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value as Json};

use crate::error::{Error, FieldErrors};
use crate::model::values::{check_type, json_kind as kind, printable, unknown_field_message};
use crate::model::{FieldMeta, FieldType, ModelMeta};

/// Deepest nesting of `$and`/`$or`/`$not` accepted, so hostile input cannot exhaust the stack.
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most values accepted in one `$in`/`$nin` list.
pub const MAX_IN_LIST: usize = 10_000;
/// Longest text `$contains` and `$starts_with` accept, in characters. It keeps the LIKE
/// pattern they become (up to four bytes a character, plus escapes) well under SQLite's
/// 50,000-byte limit, so both backends accept and refuse the same filters.
pub const MAX_PATTERN_CHARS: usize = 4_096;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AggregateOp {
    /// Number of rows (no field), or of non-null values of a field.
    Count,
    /// Sum of a numeric field.
    Sum,
    /// Mean of a numeric field.
    Avg,
    /// Smallest value of an ordered field.
    Min,
    /// Largest value of an ordered field.
    Max,
}

impl AggregateOp {
    /// The function's name in the output, e.g. `sum` in `sum_price`.
    pub fn name(self) -> &'static str {
        match self {
            AggregateOp::Count => "count",
            AggregateOp::Sum => "sum",
            AggregateOp::Avg => "avg",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
        }
    }
}

/// The JSON form of a filter that does not parse: the message starts with the `$` path of
/// what is wrong, e.g. `$.price: unknown operator '$gtx'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterSyntaxError(String);

impl FilterSyntaxError {
    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// A comparison operator of the filter language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `$eq`: equal (`null` means IS NULL).
    Eq,
    /// `$ne`: not equal (NULLs count as different).
    Ne,
    /// `$gt`: greater than.
    Gt,
    /// `$gte`: greater than or equal.
    Gte,
    /// `$lt`: less than.
    Lt,
    /// `$lte`: less than or equal.
    Lte,
    /// `$in`: equal to one of a list.
    In,
    /// `$nin`: equal to none of a list.
    Nin,
    /// `$contains`: text contains the substring (case-sensitive).
    Contains,
    /// `$starts_with`: text starts with the prefix (case-sensitive).
    StartsWith,
    /// `$is_null`: `true` for NULL, `false` for NOT NULL.
    IsNull,
}

impl Op {
    /// Every operator, in the order error messages list them.
    pub const ALL: [Op; 11] = [
        Op::Eq,
        Op::Ne,
        Op::Gt,
        Op::Gte,
        Op::Lt,
        Op::Lte,
        Op::In,
        Op::Nin,
        Op::Contains,
        Op::StartsWith,
        Op::IsNull,
    ];

    /// The operator's JSON name, e.g. `$gte`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "$eq",
            Op::Ne => "$ne",
            Op::Gt => "$gt",
            Op::Gte => "$gte",
            Op::Lt => "$lt",
            Op::Lte => "$lte",
            Op::In => "$in",
            Op::Nin => "$nin",
            Op::Contains => "$contains",
            Op::StartsWith => "$starts_with",
            Op::IsNull => "$is_null",
        }
    }

    fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A filter over a model's fields. Build it with [`Column`] methods and [`Filter::and`] /
/// [`Filter::or`] / [`Filter::not`], or parse it from JSON. Field names are checked against
/// the model when the filter is used, before any query is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every sub-filter holds (`$and`; an empty list matches everything).
    And(Vec<Filter>),
    /// At least one sub-filter holds (`$or`; an empty list matches nothing).
    Or(Vec<Filter>),
    /// The sub-filter does not hold (`$not`).
    Not(Box<Filter>),
    /// `field op value`.
    Compare {
        /// The model field.
        field: String,
        /// The operator.
        op: Op,
        /// The operand: a value, a list for `$in`/`$nin`, a boolean for `$is_null`.
        value: Json,
    },
}

impl Filter {
    /// Matches every row.
    pub fn all() -> Self {
        Filter::And(Vec::new())
    }

    /// `field op value` on a field named at run time.
    pub fn compare(field: impl Into<String>, op: Op, value: impl Into<Json>) -> Self {
        Filter::Compare {
            field: field.into(),
            op,
            value: value.into(),
        }
    }

    /// Both this and `other` hold.
    pub fn and(self, other: Filter) -> Self {
        match self {
            Filter::And(mut items) => {
                items.push(other);
                Filter::And(items)
            }
            first => Filter::And(vec![first, other]),
        }
    }

    /// This or `other` holds.
    pub fn or(self, other: Filter) -> Self {
        match self {
            Filter::Or(mut items) => {
                items.push(other);
                Filter::Or(items)
            }
            first => Filter::Or(vec![first, other]),
        }
    }

    /// This does not hold.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Filter::Not(Box::new(self))
    }

    /// Parses the JSON form; unknown operators and malformed shapes are errors naming the path.
    pub fn from_json(value: &Json) -> Result<Filter, FilterSyntaxError> {
        parse(value, "$", 0).map_err(FilterSyntaxError)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Json {
        match self {
            Filter::And(items) => serde_json::json!({ "$and": items.iter().map(Filter::to_json).collect::<Vec<_>>() }),
            Filter::Or(items) => serde_json::json!({ "$or": items.iter().map(Filter::to_json).collect::<Vec<_>>() }),
            Filter::Not(inner) => serde_json::json!({ "$not": inner.to_json() }),
            Filter::Compare { field, op, value } => {
                let mut ops = Map::new();
                ops.insert(op.name().to_owned(), value.clone());
                let mut obj = Map::new();
                obj.insert(field.clone(), Json::Object(ops));
                Json::Object(obj)
            }
        }
    }
}

fn parse(value: &Json, path: &str, depth: usize) -> Result<Filter, String> {
    if depth > MAX_FILTER_DEPTH {
        return Err(format!("{path}: filters nest deeper than {MAX_FILTER_DEPTH} levels"));
    }
    let Json::Object(obj) = value else {
        // The kind, not the value: the value may be huge or nested deep.
        return Err(format!("{path}: a filter must be a JSON object, got {}", kind(value)));
    };
    // Several conditions in one object become an implicit `$and`, which is a level of its own
    // for `write_sql` and in `to_json`; counting it here keeps every parsed filter within
    // what those accept.
    let depth = if conditions(obj) > 1 { depth + 1 } else { depth };
    if depth > MAX_FILTER_DEPTH {
        return Err(format!("{path}: filters nest deeper than {MAX_FILTER_DEPTH} levels"));
    }
    let mut parts = Vec::with_capacity(obj.len());
    for (key, val) in obj {
        let here = format!("{path}.{}", printable(key));
        match key.as_str() {
            "$and" | "$or" => {
                let Json::Array(items) = val else {
                    return Err(format!("{here}: must be an array of filters"));
                };
                let subs = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| parse(item, &format!("{here}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(if key == "$and" { Filter::And(subs) } else { Filter::Or(subs) });
            }
            "$not" => parts.push(Filter::Not(Box::new(parse(val, &here, depth + 1)?))),
            k if k.starts_with('$') => {
                return Err(format!(
                    "{path}: unknown operator '{}' (use $and, $or, $not at this level)",
                    printable(k)
                ));
            }
            field => match val {
                Json::Object(ops) if !ops.is_empty() && ops.keys().all(|k| k.starts_with('$')) => {
                    for (op_name, operand) in ops {
                        let op = Op::from_name(op_name).ok_or_else(|| {
                            format!(
                                "{here}: unknown operator '{}' (operators: {})",
                                printable(op_name),
                                Op::ALL.map(Op::name).join(" ")
                            )
                        })?;
                        parts.push(Filter::Compare {
                            field: field.to_owned(),
                            op,
                            value: operand.clone(),
                        });
                    }
                }
                Json::Object(_) => {
                    return Err(format!(
                        "{here}: expected a value or an object of operators such as {{\"$gte\": 1}}"
                    ));
                }
                Json::Null => parts.push(Filter::Compare {
                    field: field.to_owned(),
                    op: Op::IsNull,
                    value: Json::Bool(true),
                }),
                other => parts.push(Filter::Compare {
                    field: field.to_owned(),
                    op: Op::Eq,
                    value: other.clone(),
                }),
            },
        }
    }
    Ok(if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Filter::And(parts)
    })
}

/// How many conditions a filter object holds: one per key, one per operator of a field with
/// an object of operators.
fn conditions(obj: &Map<String, Json>) -> usize {
    obj.iter()
        .map(|(key, val)| match val {
            Json::Object(ops) if !key.starts_with('$') && !ops.is_empty() && ops.keys().all(|k| k.starts_with('$')) => ops.len(),
            _ => 1,
        })
        .sum()
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Json::deserialize(deserializer)?;
        Filter::from_json(&value).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Filter {
    fn schema_name() -> Cow<'static, str> {
        "Filter".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "A filter: {\"field\": value} or {\"field\": {\"$op\": value}} with operators $eq $ne $gt $gte $lt $lte $in $nin $contains $starts_with $is_null, combined with $and, $or (arrays) and $not (a filter)."
        })
    }
}

/// A typed handle on one column of a model, emitted by the derive as an associated constant
/// (`Product::PRICE`), so filters and sorts built in Rust name real fields with values of the
/// field's type.
pub struct Column<T> {
    name: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Column<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Column<T> {}

impl<T> fmt::Debug for Column<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Column({})", self.name)
    }
}

impl<T: Serialize> Column<T> {
    /// A handle on the column `name`; the derive creates these.
    pub const fn new(name: &'static str) -> Self {
        Column { name, _type: PhantomData }
    }

    /// The column's field name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn cmp(&self, op: Op, value: impl Into<T>) -> Filter {
        Filter::Compare {
            field: self.name.to_owned(),
            op,
            value: to_json(&value.into()),
        }
    }

    /// `column = value`.
    pub fn eq(&self, value: impl Into<T>) -> Filter {
        self.cmp(Op::Eq, value)
    }
    /// `column <> value` (NULL counts as different).
    pub fn ne(&self, value: impl Into<T>) -> Filter {
        self.cmp(Op::Ne, value)
    }
    /// `column > value`.
    pub fn gt(&self, value: impl Into<T>) -> Filter {
        self.cmp(Op::Gt, value)
    }
    /// `column >= value`.
    pub fn gte(&self, value: impl Into<T>) -> Filter {
        self.cmp(Op::Gte, value)
    }
    /// `column < value`.
    pub fn lt(&self, value: impl Into<T>) -> Filter {
        self.cmp(Op::Lt, value)
    }
    /// `column <= value`.
    pub fn lte(&self, value: impl Into<T>) -> Filter {
        self.cmp(Op::Lte, value)
    }
    /// `column IN (values)`.
    pub fn is_in<V: Into<T>>(&self, values: impl IntoIterator<Item = V>) -> Filter {
        let list = values.into_iter().map(|v| to_json(&v.into())).collect();
        Filter::Compare {
            field: self.name.to_owned(),
            op: Op::In,
            value: Json::Array(list),
        }
    }
    /// `column NOT IN (values)`.
    pub fn not_in<V: Into<T>>(&self, values: impl IntoIterator<Item = V>) -> Filter {
        let list = values.into_iter().map(|v| to_json(&v.into())).collect();
        Filter::Compare {
            field: self.name.to_owned(),
            op: Op::Nin,
            value: Json::Array(list),
        }
    }
    /// `column IS NULL` (`true`) or `IS NOT NULL` (`false`).
    pub fn is_null(&self, is_null: bool) -> Filter {
        Filter::Compare {
            field: self.name.to_owned(),
            op: Op::IsNull,
            value: Json::Bool(is_null),
        }
    }
    /// Sort ascending by this column.
    pub fn asc(&self) -> SortKey {
        SortKey {
            field: self.name.to_owned(),
            descending: false,
        }
    }
    /// Sort descending by this column.
    pub fn desc(&self) -> SortKey {
        SortKey {
            field: self.name.to_owned(),
            descending: true,
        }
    }
}

impl Column<String> {
    /// Text contains `needle` (case-sensitive; `%` and `_` are literal).
    pub fn contains(&self, needle: impl Into<String>) -> Filter {
        Filter::Compare {
            field: self.name.to_owned(),
            op: Op::Contains,
            value: Json::String(needle.into()),
        }
    }
    /// Text starts with `prefix` (case-sensitive; `%` and `_` are literal).
    pub fn starts_with(&self, prefix: impl Into<String>) -> Filter {
        Filter::Compare {
            field: self.name.to_owned(),
            op: Op::StartsWith,
            value: Json::String(prefix.into()),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Json {
    // Field types are plain scalars, strings, timestamps or JSON: serialisation cannot fail.
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// One sort key. JSON: `"price"` (ascending), `"-price"` (descending) or
/// `{"field": "price", "descending": true}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The model field.
    pub field: String,
    /// Largest first.
    pub descending: bool,
}

impl SortKey {
    /// Parses `"price"` / `"-price"`.
    pub fn parse(text: &str) -> SortKey {
        match text.strip_prefix('-') {
            Some(field) => SortKey {
                field: field.to_owned(),
                descending: true,
            },
            None => SortKey {
                field: text.to_owned(),
                descending: false,
            },
        }
    }
}

impl Serialize for SortKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = if self.descending {
            format!("-{}", self.field)
        } else {
            self.field.clone()
        };
        serializer.serialize_str(&text)
    }
}

/// What a sort key looks like, for errors about one that does not.
const SORT_KEY_SHAPE: &str = "a sort key: \"price\", \"-price\" or {\"field\": \"price\", \"descending\": true}";

/// Reads either form of a sort key by the JSON type found, so a key of the wrong shape is
/// refused with what was found and where (an untagged enum would only say that no variant
/// matched).
struct SortKeyVisitor;

impl<'de> Visitor<'de> for SortKeyVisitor {
    type Value = SortKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SORT_KEY_SHAPE)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SortKey, E> {
        Ok(SortKey::parse(text))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SortKey, A::Error> {
        const FIELDS: &[&str] = &["field", "descending"];
        let (mut field, mut descending) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "field" if field.is_some() => return Err(serde::de::Error::duplicate_field("field")),
                "descending" if descending.is_some() => return Err(serde::de::Error::duplicate_field("descending")),
                "field" => field = Some(map.next_value::<String>()?),
                "descending" => descending = Some(map.next_value::<bool>()?),
                other => return Err(serde::de::Error::unknown_field(&printable(other), FIELDS)),
            }
        }
        Ok(SortKey {
            field: field.ok_or_else(|| serde::de::Error::missing_field("field"))?,
            descending: descending.unwrap_or(false),
        })
    }
}

impl<'de> Deserialize<'de> for SortKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SortKeyVisitor)
    }
}

impl JsonSchema for SortKey {
    fn schema_name() -> Cow<'static, str> {
        "SortKey".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A field name to sort by, ascending; prefix with '-' for descending, or {\"field\": ..., \"descending\": true}.",
            "anyOf": [
                { "type": "string" },
                { "type": "object", "properties": { "field": { "type": "string" }, "descending": { "type": "boolean" } }, "required": ["field"], "additionalProperties": false }
            ]
        })
    }
}

/// Sort keys checked against a model, with the primary key appended as the final tie-breaker
/// so keyset pagination is total.
#[derive(Debug, Clone)]
pub struct CheckedSort {
    /// `(field, descending)` in order; the last key is the primary key.
    pub keys: Vec<(&'static FieldMeta, bool)>,
}

impl CheckedSort {
    /// Checks sort keys: known, non-nullable, orderable fields, each at most once.
    pub fn check(meta: &'static ModelMeta, sort: &[SortKey]) -> Result<CheckedSort, Error> {
        let mut errors = FieldErrors::default();
        let mut keys: Vec<(&'static FieldMeta, bool)> = Vec::with_capacity(sort.len() + 1);
        for key in sort {
            let Some(f) = meta.field(&key.field) else {
                errors.push(printable(&key.field), unknown_field_message(meta, &key.field));
                continue;
            };
            if f.ty == FieldType::Json {
                errors.push(f.name, "JSON fields cannot be sorted on");
            } else if f.nullable {
                errors.push(
                    f.name,
                    "nullable fields cannot be sort keys (keyset pagination needs non-null values)",
                );
            } else if keys.iter().any(|(k, _)| k.name == f.name) {
                errors.push(f.name, "appears twice in the sort");
            } else {
                keys.push((f, key.descending));
            }
        }
        if !errors.is_empty() {
            return Err(Error::invalid(meta.name, "sort", errors.to_string()));
        }
        if !keys.iter().any(|(f, _)| f.primary_key) {
            let pk = meta.field(meta.primary_key).expect("the derive checks the primary key exists");
            keys.push((pk, false));
        }
        Ok(CheckedSort { keys })
    }

    fn signature(&self) -> String {
        self.keys
            .iter()
            .map(|(f, d)| format!("{}{}", if *d { "-" } else { "" }, f.name))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cursor that continues after a row whose sort-key values are `values`.
    pub fn cursor_after(&self, values: Vec<Json>) -> String {
        let body = serde_json::json!({ "s": self.signature(), "v": values });
        URL_SAFE_NO_PAD.encode(body.to_string())
    }

    /// Decodes a cursor made by [`CheckedSort::cursor_after`] for this same sort: the
    /// sort-key values of the row to continue after, checked against their fields' types.
    pub fn decode_cursor(&self, meta: &'static ModelMeta, cursor: &str) -> Result<Vec<Json>, Error> {
        let bad = |why: &str| Error::invalid(meta.name, "cursor", why.to_owned());
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.trim())
            .map_err(|_| bad("not a cursor returned by a List node"))?;
        let body: Json = serde_json::from_slice(&bytes).map_err(|_| bad("not a cursor returned by a List node"))?;
        if body.get("s").and_then(Json::as_str) != Some(self.signature().as_str()) {
            return Err(bad("the cursor was made for a different sort order"));
        }
        let Some(Json::Array(values)) = body.get("v") else {
            return Err(bad("not a cursor returned by a List node"));
        };
        if values.len() != self.keys.len() {
            return Err(bad("not a cursor returned by a List node"));
        }
        let mut typed = Vec::with_capacity(values.len());
        for ((f, _), v) in self.keys.iter().zip(values) {
            typed.push(check_type(f, v).map_err(|m| bad(&format!("value for '{}' {m}", f.name)))?);
        }
        Ok(typed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested_not(mut filter: Json, levels: usize) -> Json {
        for _ in 0..levels {
            filter = json!({ "$not": filter });
        }
        filter
    }

    #[test]
    fn an_implicit_and_counts_as_a_level_so_parsed_filters_round_trip() {
        // Found by fuzzing: two conditions at the deepest level parsed, but their `$and` was one
        // level too deep for `to_json` and `write_sql`.
        let deepest = nested_not(json!({"a": 1}), MAX_FILTER_DEPTH);
        let parsed = Filter::from_json(&deepest).unwrap();
        assert_eq!(Filter::from_json(&parsed.to_json()), Ok(parsed));

        let too_deep = nested_not(json!({"a": 1, "b": 2}), MAX_FILTER_DEPTH);
        let err = Filter::from_json(&too_deep).unwrap_err();
        assert!(err.message().contains("nest deeper than 32 levels"), "{err}");
        let ops = nested_not(json!({"a": {"$gt": 1, "$lt": 5}}), MAX_FILTER_DEPTH);
        assert!(Filter::from_json(&ops).is_err());

        let fits = nested_not(json!({"a": 1, "b": 2}), MAX_FILTER_DEPTH - 1);
        let parsed = Filter::from_json(&fits).unwrap();
        assert_eq!(Filter::from_json(&parsed.to_json()), Ok(parsed));
    }

    #[test]
    fn a_value_where_a_filter_belongs_is_not_echoed() {
        let err = Filter::from_json(&json!({ "$not": "x".repeat(100_000) })).unwrap_err();
        assert_eq!(err.message(), "$.$not: a filter must be a JSON object, got a string");
        let err = Filter::from_json(&json!({ "$and": [[1, 2]] })).unwrap_err();
        assert_eq!(err.message(), "$.$and[0]: a filter must be a JSON object, got an array");
    }
}
