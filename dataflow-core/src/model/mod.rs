//! Models and their metadata: what `#[derive(Model)]` describes about a struct.

pub mod embed;
pub mod filter;
pub mod record;
pub mod values;

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use regex::Regex;
use schemars::JsonSchema;
use sea_orm::{DbErr, QueryResult};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A struct that `#[derive(Model)]` turned into a table, nine nodes and their metadata.
///
/// Implemented by the derive; implementing it by hand is possible but the metadata must then
/// match `from_row` exactly.
pub trait Model: Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static {
    /// The fields a caller provides to create a row: every field but the primary key.
    type New: Serialize + DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static;

    /// The model's metadata: table, fields, rules, relations, options.
    fn meta() -> &'static ModelMeta;

    /// Decodes the model's own fields from a row that selected the model's record columns.
    fn from_row(row: &QueryResult) -> Result<Self, DbErr>;

    /// The primary key of this value.
    fn primary_key(&self) -> i64;
}

/// Everything dataflow knows about a model, produced at compile time by the derive.
#[derive(Debug)]
pub struct ModelMeta {
    /// The Rust type name, e.g. `Product`.
    pub name: &'static str,
    /// The table name, e.g. `products`.
    pub table: &'static str,
    /// The primary-key field (always a database-generated 64-bit integer).
    pub primary_key: &'static str,
    /// All fields in declaration order, the primary key included.
    pub fields: &'static [FieldMeta],
    /// Relations declared on foreign-key fields.
    pub relations: &'static [RelationMeta],
    /// Delete marks rows with `deleted_at` instead of removing them.
    pub soft_delete: bool,
    /// Rows belong to a tenant; every query is scoped to the context's tenant.
    pub multi_tenant: bool,
    /// Seconds a cached row lives in the read-through cache.
    pub cache_ttl_secs: u64,
    /// The struct's doc comment.
    pub doc: &'static str,
}

/// One field of a model.
#[derive(Debug)]
pub struct FieldMeta {
    /// Field and column name.
    pub name: &'static str,
    /// Value type, which decides the column type.
    pub ty: FieldType,
    /// `Option<T>` in Rust, NULL allowed in the column.
    pub nullable: bool,
    /// This field is the primary key.
    pub primary_key: bool,
    /// A (non-unique) index is created on the column.
    pub indexed: bool,
    /// A unique index is created on the column (per tenant for multi-tenant models).
    pub unique: bool,
    /// The field's text is part of the model's embedding document.
    pub embed: bool,
    /// Validation rules checked before every write.
    pub rules: &'static [Rule],
    /// The field's doc comment.
    pub doc: &'static str,
}

/// The value type of a field. Integers and floats are stored as 64-bit columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// `i64`, `i32`, `u32`, ...: a `BIGINT` column.
    Integer,
    /// `f64`, `f32`: a `DOUBLE PRECISION` column.
    Float,
    /// `bool`.
    Boolean,
    /// `String`: a `TEXT` column.
    Text,
    /// `chrono::DateTime<Utc>`: a `TIMESTAMPTZ` column; RFC 3339 in JSON.
    Timestamp,
    /// `serde_json::Value`: a `JSONB` column.
    Json,
}

impl FieldType {
    /// A human name for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::Integer => "an integer",
            FieldType::Float => "a number",
            FieldType::Boolean => "a boolean",
            FieldType::Text => "a string",
            FieldType::Timestamp => "an RFC 3339 timestamp string",
            FieldType::Json => "any JSON value",
        }
    }

    /// Whether values of this type are ordered (usable with `$gt`, `min`, sort, ...).
    pub fn is_ordered(self) -> bool {
        !matches!(self, FieldType::Json | FieldType::Boolean)
    }

    /// Whether values of this type can be summed and averaged.
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Integer | FieldType::Float)
    }
}

/// A validation rule on a field, checked on every write before any store is touched.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Numbers: value ≥ this.
    Min(f64),
    /// Numbers: value ≤ this.
    Max(f64),
    /// Strings: length in characters within the bounds.
    Len {
        /// Smallest allowed length.
        min: Option<usize>,
        /// Largest allowed length.
        max: Option<usize>,
    },
    /// Strings: must match this regular expression (checked to compile by the derive).
    Pattern(&'static str),
    /// Strings: must be one of these.
    OneOf(&'static [&'static str]),
}

/// A relation declared on a foreign-key field: `Product.category_id → Category` as `IN_CATEGORY`.
#[derive(Debug)]
pub struct RelationMeta {
    /// The relation (edge) name, upper snake case, e.g. `IN_CATEGORY`.
    pub name: &'static str,
    /// The foreign-key field holding the target's primary key.
    pub field: &'static str,
    /// The target model's Rust name.
    pub target: &'static str,
    /// The target model's metadata.
    pub target_meta: fn() -> &'static ModelMeta,
    /// What removing a target row does to the rows that name it.
    pub on_delete: OnDelete,
}

/// What removing a row does to the rows whose foreign key names it: `on_delete` of a
/// `relation(...)`, and the `ON DELETE` action of its `FOREIGN KEY` constraint.
///
/// It applies when a row is removed: a hard delete, or any delete of a model without
/// `soft_delete`. A soft delete keeps the row, so the rows that name it keep naming it (the
/// constraint still holds) and none of these actions happens; new writes may not name a
/// soft-deleted row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDelete {
    /// The row cannot be removed while other rows name it (soft-deleted ones included).
    #[default]
    Restrict,
    /// The rows that name it are removed with it (for good, whatever their model's
    /// `soft_delete`), and theirs in turn as their own relations declare.
    Cascade,
    /// The rows that name it keep living with the foreign key set to NULL (an `Option` field).
    SetNull,
}

impl OnDelete {
    /// The SQL `ON DELETE` action. `restrict` is SQL's `NO ACTION`: both refuse to remove a
    /// named row, but `NO ACTION` looks at the end of the statement, so one statement may
    /// remove a row and the rows that name it (a subtree of a model that names itself);
    /// SQLite's `RESTRICT` would refuse that row by row.
    pub fn sql(self) -> &'static str {
        match self {
            OnDelete::Restrict => "NO ACTION",
            OnDelete::Cascade => "CASCADE",
            OnDelete::SetNull => "SET NULL",
        }
    }
}

impl ModelMeta {
    /// How long cache entries and tombstones of this model's rows live (at least a second).
    pub fn cache_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.cache_ttl_secs.max(1))
    }

    /// The field called `name`, if the model has one.
    pub fn field(&self, name: &str) -> Option<&'static FieldMeta> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Field names, for "known fields are ..." in error messages.
    pub fn field_names(&self) -> Vec<&'static str> {
        self.fields.iter().map(|f| f.name).collect()
    }

    /// The relation called `name`, if declared.
    pub fn relation(&self, name: &str) -> Option<&'static RelationMeta> {
        self.relations.iter().find(|r| r.name == name)
    }

    /// The relation declared on the foreign-key field `field`, if any.
    pub fn relation_on(&self, field: &str) -> Option<&'static RelationMeta> {
        self.relations.iter().find(|r| r.field == field)
    }

    /// Whether any field is marked `embed` (the model has a vector collection).
    pub fn has_embed_fields(&self) -> bool {
        self.fields.iter().any(|f| f.embed)
    }

    /// Fields with a unique index: possible conflict keys for upserts.
    pub fn unique_fields(&self) -> impl Iterator<Item = &'static FieldMeta> + '_ {
        self.fields.iter().filter(|f| f.unique)
    }
}

/// Compiles (once per process) the regular expression of a [`Rule::Pattern`].
pub(crate) fn pattern_regex(pattern: &'static str) -> Result<&'static Regex, regex::Error> {
    static CACHE: OnceLock<RwLock<HashMap<&'static str, &'static Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.read().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(re);
    }
    let re: &'static Regex = Box::leak(Box::new(Regex::new(pattern)?));
    cache.write().unwrap_or_else(|e| e.into_inner()).insert(pattern, re);
    Ok(re)
}
