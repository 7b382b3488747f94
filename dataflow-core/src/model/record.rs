//! A stored row: the model's fields plus the columns dataflow maintains.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use sea_orm::{DbErr, QueryResult};
use serde::{Deserialize, Serialize};

use crate::model::Model;

/// A row as stored: the model's own fields (flattened in JSON) plus its version and timestamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(bound = "M: Model")]
pub struct Record<M: Model> {
    /// The model's fields, primary key included.
    #[serde(flatten)]
    pub data: M,
    /// Starts at 1 and grows by one with every committed write; Update can require it.
    pub version: i64,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// When the row was last written.
    pub updated_at: DateTime<Utc>,
    /// When the row was soft-deleted (models with `soft_delete` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl<M: Model> Record<M> {
    /// The row's primary key.
    pub fn id(&self) -> i64 {
        self.data.primary_key()
    }

    /// Decodes a row selected with the record columns (the fields, `version`, `created_at`,
    /// `updated_at` and, with soft delete, `deleted_at`).
    pub fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        Ok(Record {
            data: M::from_row(row)?,
            version: row.try_get("", "version")?,
            created_at: row.try_get("", "created_at")?,
            updated_at: row.try_get("", "updated_at")?,
            deleted_at: if M::meta().soft_delete {
                row.try_get("", "deleted_at")?
            } else {
                None
            },
        })
    }
}
