//! Who may do what: API keys bound to a tenant and a role, stored hashed, and the append-only
//! audit log of admin actions and submitted runs.
//!
//! A key is `dfk_<id>_<secret>`: the id (16 hex digits) finds the stored key, the secret (32
//! random bytes as hex) proves it. Only the SHA-256 of the secret is stored: the secret has
//! 256 bits of entropy, so a slow password hash would add nothing but latency to every
//! request; what matters is that the table alone never gives a usable key. The secret is
//! shown once, when the key is created.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ServiceError;
use super::db::{Db, integer, now, optional_text, text};

/// What a key may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read runs, workflows, nodes, health and metrics.
    Viewer,
    /// Also submit and cancel runs.
    Operator,
    /// Also create and revoke keys, and migrate the stores.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("no role {other:?}; the roles are viewer, operator and admin")),
        }
    }
}

/// A stored API key, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Its id, the part of the key before the secret.
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// What it may do.
    pub role: Role,
    /// A name to recognise it by.
    pub name: String,
    /// When it was created.
    pub created_at: String,
    /// When it was revoked; a revoked key is refused.
    pub revoked_at: Option<String>,
}

/// A key just created: the stored key and the one string a client sends, shown only now.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    /// The stored key.
    #[serde(flatten)]
    pub key: ApiKey,
    /// `dfk_<id>_<secret>`, for `Authorization: Bearer …`.
    pub token: String,
}

const KEY_PREFIX: &str = "dfk_";

/// Longest tenant id a key may be bound to (the stores' own limit).
const MAX_TENANT_LEN: usize = 128;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> Result<String, ServiceError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| ServiceError::Random(e.to_string()))?;
    Ok(hex(&buffer))
}

fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares two strings in time that depends only on their lengths.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a tenant id as the stores do: 1 to 128 characters, no control characters.
pub(crate) fn check_tenant(tenant: &str) -> Result<(), ServiceError> {
    if tenant.is_empty() || tenant.chars().count() > MAX_TENANT_LEN || tenant.chars().any(char::is_control) {
        return Err(ServiceError::BadRequest {
            field: Some("tenant".into()),
            message: format!("a tenant id is 1 to {MAX_TENANT_LEN} characters without control characters"),
        });
    }
    Ok(())
}

/// API keys and the audit log in the relational store.
#[derive(Clone)]
pub(crate) struct Keys {
    db: Db,
}

impl Keys {
    pub(crate) fn new(db: Db) -> Self {
        Keys { db }
    }

    fn from_row(row: &dataflow_core::sea_orm::QueryResult) -> Result<ApiKey, ServiceError> {
        Ok(ApiKey {
            id: text(row, "id")?,
            tenant: text(row, "tenant")?,
            role: text(row, "role")?.parse().map_err(ServiceError::Corrupt)?,
            name: text(row, "name")?,
            created_at: text(row, "created_at")?,
            revoked_at: optional_text(row, "revoked_at")?,
        })
    }

    /// Creates a key for `tenant` with `role`.
    pub(crate) async fn create(&self, tenant: &str, role: Role, name: &str) -> Result<CreatedKey, ServiceError> {
        check_tenant(tenant)?;
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let key = ApiKey {
            id: id.clone(),
            tenant: tenant.to_owned(),
            role,
            name: name.to_owned(),
            created_at: now(),
            revoked_at: None,
        };
        self.db
            .execute(
                "creating an API key",
                "INSERT INTO dataflow_api_keys (id, hash, tenant, role, name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    id.clone().into(),
                    digest(&secret).into(),
                    key.tenant.clone().into(),
                    role.as_str().into(),
                    key.name.clone().into(),
                    key.created_at.clone().into(),
                ],
            )
            .await?;
        Ok(CreatedKey {
            token: format!("{KEY_PREFIX}{id}_{secret}"),
            key,
        })
    }

    /// Revokes key `id`, when it belongs to `tenant` (any, with `None`); whether it was
    /// found unrevoked.
    pub(crate) async fn revoke(&self, id: &str, tenant: Option<&str>) -> Result<bool, ServiceError> {
        let changed = match tenant {
            Some(tenant) => {
                self.db
                    .execute(
                        "revoking an API key",
                        "UPDATE dataflow_api_keys SET revoked_at = $2 WHERE id = $1 AND tenant = $3 AND revoked_at IS NULL",
                        vec![id.into(), now().into(), tenant.into()],
                    )
                    .await?
            }
            None => {
                self.db
                    .execute(
                        "revoking an API key",
                        "UPDATE dataflow_api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                        vec![id.into(), now().into()],
                    )
                    .await?
            }
        };
        Ok(changed == 1)
    }

    /// The keys of `tenant` (every tenant's, with `None`), oldest first.
    pub(crate) async fn list(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, ServiceError> {
        let rows = match tenant {
            Some(tenant) => {
                self.db
                    .query(
                        "listing API keys",
                        "SELECT id, tenant, role, name, created_at, revoked_at FROM dataflow_api_keys WHERE tenant = $1 ORDER BY created_at, id",
                        vec![tenant.into()],
                    )
                    .await?
            }
            None => {
                self.db
                    .query(
                        "listing API keys",
                        "SELECT id, tenant, role, name, created_at, revoked_at FROM dataflow_api_keys ORDER BY created_at, id",
                        vec![],
                    )
                    .await?
            }
        };
        rows.iter().map(Self::from_row).collect()
    }

    /// The unrevoked key that `token` is, if it is one.
    pub(crate) async fn verify(&self, token: &str) -> Result<Option<ApiKey>, ServiceError> {
        let Some((id, secret)) = token.strip_prefix(KEY_PREFIX).and_then(|rest| rest.split_once('_')) else {
            return Ok(None);
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let row = self
            .db
            .query_one(
                "checking an API key",
                "SELECT id, hash, tenant, role, name, created_at, revoked_at FROM dataflow_api_keys WHERE id = $1",
                vec![id.into()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key = Self::from_row(&row)?;
        Ok((same(&text(&row, "hash")?, &digest(secret)) && key.revoked_at.is_none()).then_some(key))
    }

    /// Appends `entry` to the audit log.
    pub(crate) async fn audit(&self, entry: &AuditEntry) -> Result<(), ServiceError> {
        self.db
            .execute(
                "writing the audit log",
                "INSERT INTO dataflow_audit (at, actor, tenant, action, target, remote, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                vec![
                    now().into(),
                    entry.actor.clone().into(),
                    entry.tenant.clone().into(),
                    entry.action.clone().into(),
                    entry.target.clone().into(),
                    entry.remote.clone().into(),
                    entry.detail.to_string().into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// The latest `limit` audit entries of `tenant`, newest first.
    pub(crate) async fn audit_log(&self, tenant: &str, limit: u32) -> Result<Vec<AuditRecord>, ServiceError> {
        let rows = self
            .db
            .query(
                "reading the audit log",
                "SELECT seq, at, actor, tenant, action, target, remote, detail FROM dataflow_audit WHERE tenant = $1 ORDER BY seq DESC LIMIT $2",
                vec![tenant.into(), i64::from(limit).into()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let detail = text(row, "detail")?;
                Ok(AuditRecord {
                    seq: integer(row, "seq")?,
                    at: text(row, "at")?,
                    entry: AuditEntry {
                        actor: text(row, "actor")?,
                        tenant: text(row, "tenant")?,
                        action: text(row, "action")?,
                        target: text(row, "target")?,
                        remote: text(row, "remote")?,
                        detail: serde_json::from_str(&detail).map_err(|e| ServiceError::Corrupt(format!("a stored audit detail: {e}")))?,
                    },
                })
            })
            .collect()
    }
}

/// One action for the audit log: who (an API key's id, or `cli`), for which tenant, what,
/// on what, from where.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// The API key's id, or `cli` for the command line.
    pub actor: String,
    /// The tenant acted for.
    pub tenant: String,
    /// What was done: `run.submit`, `run.cancel`, `key.create`, `key.revoke`, `migrate`.
    pub action: String,
    /// What it was done to: a run's or a key's id, a workflow's name.
    pub target: String,
    /// Where the request came from: the client's address, or `local`.
    pub remote: String,
    /// Anything else worth keeping (never a secret).
    pub detail: Value,
}

/// An audit entry as stored, with its place and time.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Its place in the log.
    pub seq: i64,
    /// When it was written.
    pub at: String,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
}
