//! Every attribute name the derive understands, in one place.

/// The attribute namespace: `#[dataflow(...)]`.
pub const DATAFLOW: &str = "dataflow";

// Container attributes.
pub const TABLE: &str = "table";
pub const SOFT_DELETE: &str = "soft_delete";
pub const MULTI_TENANT: &str = "multi_tenant";
pub const CACHE_TTL: &str = "cache_ttl";

// Field attributes.
pub const PRIMARY_KEY: &str = "primary_key";
pub const INDEXED: &str = "indexed";
pub const UNIQUE: &str = "unique";
pub const EMBED: &str = "embed";
pub const MIN: &str = "min";
pub const MAX: &str = "max";
pub const LEN: &str = "len";
pub const PATTERN: &str = "pattern";
pub const ONE_OF: &str = "one_of";
pub const RELATION: &str = "relation";

// Inside `relation(...)`.
pub const TARGET: &str = "target";
pub const NAME: &str = "name";
pub const ON_DELETE: &str = "on_delete";

pub const CONTAINER_ATTRS: &[&str] = &[TABLE, SOFT_DELETE, MULTI_TENANT, CACHE_TTL];
pub const FIELD_ATTRS: &[&str] = &[PRIMARY_KEY, INDEXED, UNIQUE, EMBED, MIN, MAX, LEN, PATTERN, ONE_OF, RELATION];

/// Column names dataflow maintains itself.
pub const SYSTEM_COLUMNS: &[&str] = &["version", "created_at", "updated_at", "deleted_at", "tenant_id"];
