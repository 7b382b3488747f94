//! The HTTP API of `dataflow serve` (axum): submit, read and cancel runs, stream a run's
//! progress as Server-Sent Events, list workflows and nodes, health, Prometheus metrics, API
//! keys and the audit log, the OpenAPI document of all of it, and the MCP endpoint at `/mcp`
//! ([`super::mcp`]).
//!
//! Every route needs `Authorization: Bearer <key>`: no key or an unknown or revoked one gets
//! 401, a role below the route's 403. A key sees only its tenant's runs: another tenant's run
//! is 404, as a run that does not exist. Bodies above [`MAX_BODY_BYTES`] get 413, a body that
//! is not JSON 400 with the line and column, a run input that does not fit its workflow 422
//! with each input named.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, Role, Service, ServiceError};

/// Largest request body accepted (1 MiB); a larger one gets 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest a `?wait=true` submit waits for its run by default, and at most.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The API's routes over `service`. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the client's address goes into the
/// audit log.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/workflows", get(workflows))
        .route("/v1/nodes", get(nodes))
        .route("/v1/workflows/{name}/runs", post(submit))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(read_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
        .route("/v1/audit", get(audit_log))
        .route("/v1/migrate", post(migrate))
        .nest_service("/mcp", super::mcp::router(service.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}

/// An error as the API answers it: a status and `{"error": {"message", "field"?, "problems"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({"error": {"status": status.as_u16(), "message": message.into()}}),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        let (status, extra) = match &e {
            ServiceError::UnknownWorkflow { .. } | ServiceError::NotFound { .. } => (StatusCode::NOT_FOUND, Value::Null),
            ServiceError::BadInput { problems } => (StatusCode::UNPROCESSABLE_ENTITY, json!({"problems": problems})),
            ServiceError::BadRequest { field, .. } => (StatusCode::BAD_REQUEST, json!({"field": field})),
            ServiceError::NotCancellable { .. } => (StatusCode::CONFLICT, Value::Null),
            ServiceError::StillRunning { .. } => (StatusCode::ACCEPTED, Value::Null),
            ServiceError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, Value::Null),
            ServiceError::Workflows(_) | ServiceError::Database { .. } | ServiceError::Queue(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, Value::Null)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, Value::Null),
        };
        if status.is_server_error() {
            tracing::error!("request failed: {message}");
        }
        let mut error = ApiError::new(status, message);
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                error.body["error"][k] = v;
            }
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"dataflow\""));
        }
        response
    }
}

/// The caller of a request: the key of its `Authorization: Bearer` header, checked.
pub struct Authed(pub Caller);

impl FromRequestParts<Service> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, Self::Rejection> {
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |ConnectInfo(addr)| addr.to_string());
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "an API key is needed: Authorization: Bearer <key>",
            ));
        };
        match service.verify_key(token).await? {
            Some(key) => Ok(Authed(Caller {
                actor: key.id,
                tenant: key.tenant,
                role: key.role,
                remote,
            })),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "the API key is unknown or revoked")),
        }
    }
}

impl Authed {
    /// The caller, when its role is at least `role`; else 403.
    fn at_least(self, role: Role) -> Result<Caller, ApiError> {
        if self.0.role >= role {
            Ok(self.0)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this needs the {role} role; the key has {}", self.0.role),
            ))
        }
    }
}

/// Parses a request body as JSON (an empty body is `{}`); 400 with where it went wrong.
fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| {
        let mut error = ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}"));
        error.body["error"]["line"] = json!(e.line());
        error.body["error"]["column"] = json!(e.column());
        error
    })
}

/// How old an answer of `GET /health` may be: the stores are checked at most once in this
/// time, whatever the rate of requests (monitors and load balancers poll it), and the requests
/// in between get the last check, with its age.
pub const HEALTH_MAX_AGE: Duration = Duration::from_secs(1);

/// The last check of the stores `GET /health` answered with.
pub(super) struct CheckedHealth {
    at: Instant,
    status: StatusCode,
    body: Value,
}

/// `GET /health`: each store's backend and ping latency, and the outbox backlog (see
/// [`crate::health`]); 503 when a store is down. Checked at most once per [`HEALTH_MAX_AGE`]:
/// one request checks while the others wait for its answer; `checked_ms_ago` says how old
/// the answer is.
async fn health(State(service): State<Service>, auth: Authed) -> Result<Response, ApiError> {
    auth.at_least(Role::Viewer)?;
    let mut last = service.0.health.lock().await;
    if last.as_ref().is_none_or(|checked| checked.at.elapsed() >= HEALTH_MAX_AGE) {
        let health = crate::health::check(service.stores()).await;
        *last = Some(CheckedHealth {
            at: Instant::now(),
            status: if health.up() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            body: health.to_json(),
        });
    }
    let checked = last.as_ref().expect("checked above");
    let mut body = checked.body.clone();
    body["checked_ms_ago"] = json!(checked.at.elapsed().as_secs_f64() * 1e3);
    Ok((checked.status, Json(body)).into_response())
}

/// `GET /metrics`: the process's metrics in the Prometheus text format.
async fn metrics(State(service): State<Service>, auth: Authed) -> Result<Response, ApiError> {
    auth.at_least(Role::Viewer)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], service.metrics_text()).into_response())
}

/// `GET /v1/workflows`: each served workflow with its description and input schema.
async fn workflows(State(service): State<Service>, auth: Authed) -> Result<Json<Value>, ApiError> {
    auth.at_least(Role::Viewer)?;
    let listed: Vec<Value> = service
        .workflows()
        .iter()
        .map(|(name, workflow)| {
            json!({
                "name": name,
                "description": workflow.def().description,
                "input_schema": workflow.input_schema(),
                "nodes": workflow.node_names().collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(Value::Array(listed)))
}

/// `GET /v1/nodes`: every node type with its input and output schema.
async fn nodes(State(service): State<Service>, auth: Authed) -> Result<Json<Value>, ApiError> {
    auth.at_least(Role::Viewer)?;
    Ok(Json(Value::Array(crate::describe_nodes(service.runtime().registry()))))
}

/// Query of a submit.
#[derive(Deserialize)]
struct SubmitQuery {
    /// Answer when the run has ended rather than at once.
    #[serde(default)]
    wait: bool,
    /// How long to wait, in seconds (default 60, at most 600).
    wait_secs: Option<u64>,
}

/// `POST /v1/workflows/{name}/runs`: the body is the run's input; an `Idempotency-Key`
/// header makes a second submit with the same key return the first run. 202 with the queued
/// run (200 with the first run for a repeated key); with `?wait=true`, 200 with the run once
/// it has ended, or 202 with it unended when the wait is over.
async fn submit(
    State(service): State<Service>,
    auth: Authed,
    Path(name): Path<String>,
    Query(query): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = auth.at_least(Role::Operator)?;
    let input = body_json(&body)?;
    let key = match headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::from(ServiceError::BadRequest {
                        field: Some("Idempotency-Key".into()),
                        message: "not visible ASCII".into(),
                    })
                })?
                .to_owned(),
        ),
        None => None,
    };
    let submitted = service.submit(&name, input, key, &caller).await?;
    let location = format!("/v1/runs/{}", submitted.run.id);
    let (status, run) = if query.wait {
        let limit = query.wait_secs.map_or(DEFAULT_WAIT, Duration::from_secs).min(MAX_WAIT);
        match service.wait(&submitted.run.id, &caller, limit).await {
            Ok(run) => (StatusCode::OK, run),
            Err(ServiceError::StillRunning { .. }) => (StatusCode::ACCEPTED, service.run(&submitted.run.id, &caller).await?),
            Err(e) => return Err(e.into()),
        }
    } else if submitted.created {
        (StatusCode::ACCEPTED, submitted.run)
    } else {
        (StatusCode::OK, submitted.run)
    };
    let mut response = (status, Json(run)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Query of a list.
#[derive(Deserialize)]
struct ListQuery {
    /// How many, newest first (default 50, at most 1,000).
    limit: Option<u32>,
}

impl ListQuery {
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(50).min(1000)
    }
}

/// `GET /v1/runs`: the tenant's latest runs.
async fn list_runs(State(service): State<Service>, auth: Authed, Query(query): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let caller = auth.at_least(Role::Viewer)?;
    let runs = service.runs(&caller, query.limit()).await?;
    Ok(Json(json!(runs)))
}

/// `GET /v1/runs/{id}`: one run of the tenant.
async fn read_run(State(service): State<Service>, auth: Authed, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let caller = auth.at_least(Role::Viewer)?;
    Ok(Json(json!(service.run(&id, &caller).await?)))
}

/// `POST /v1/runs/{id}/cancel`: cancels a queued run; 409 once it has started.
async fn cancel_run(State(service): State<Service>, auth: Authed, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let caller = auth.at_least(Role::Operator)?;
    Ok(Json(json!(service.cancel(&id, &caller).await?)))
}

/// `GET /v1/runs/{id}/events`: the run's progress as Server-Sent Events, from its first event
/// (so a client that connects late misses nothing) until it ends: `started`, `finished` and
/// `items` events (each `{"attempt", "seq", "event", "node", ...}`), then one `end` event with
/// the run. A run executed again after its worker died shows the new attempt's events after
/// the old ones.
async fn run_events(State(service): State<Service>, auth: Authed, Path(id): Path<String>) -> Result<Response, ApiError> {
    let caller = auth.at_least(Role::Viewer)?;
    // 404 at once for a run that is not the tenant's.
    service.run(&id, &caller).await?;
    let stream = progress_stream(service, caller, id);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// The events of run `id` as they are stored, polling the store while the run goes.
fn progress_stream(service: Service, caller: Caller, id: String) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Cursor {
        service: Service,
        caller: Caller,
        id: String,
        after: (i64, i64),
        pending: std::collections::VecDeque<Event>,
        ended: bool,
    }
    let cursor = Cursor {
        service,
        caller,
        id,
        after: (0, -1),
        pending: Default::default(),
        ended: false,
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.pop_front() {
                return Some((Ok(event), cursor));
            }
            if cursor.ended {
                return None;
            }
            // The run's state first: its events are all stored before it is seen ended.
            let read = async {
                let run = cursor.service.run(&cursor.id, &cursor.caller).await?;
                let events = cursor.service.events_after(&cursor.id, cursor.after).await?;
                Ok::<_, ServiceError>((run, events))
            };
            let (run, events) = match read.await {
                Ok(read) => read,
                Err(e) => {
                    cursor.ended = true;
                    cursor.pending.push_back(Event::default().event("error").data(e.to_string()));
                    continue;
                }
            };
            for (attempt, seq, mut event) in events {
                cursor.after = (attempt, seq);
                let name = event["event"].as_str().unwrap_or("progress").to_owned();
                event["attempt"] = json!(attempt);
                event["seq"] = json!(seq);
                cursor
                    .pending
                    .push_back(Event::default().event(name).id(format!("{attempt}.{seq}")).data(event.to_string()));
            }
            if cursor.pending.is_empty() {
                if run.status.is_final() {
                    cursor.ended = true;
                    cursor.pending.push_back(Event::default().event("end").data(json!(run).to_string()));
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// Body of a key creation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyBody {
    role: String,
    #[serde(default)]
    name: String,
}

/// `POST /v1/keys` (admin): a new key of the caller's tenant; 201 with its token, shown once.
async fn create_key(State(service): State<Service>, auth: Authed, body: Bytes) -> Result<Response, ApiError> {
    let caller = auth.at_least(Role::Admin)?;
    let body: NewKeyBody = serde_json::from_value(body_json(&body)?).map_err(|e| {
        ApiError::from(ServiceError::BadRequest {
            field: None,
            message: format!("a key is {{\"role\": \"viewer\" | \"operator\" | \"admin\", \"name\": \"…\"}}: {e}"),
        })
    })?;
    let role: Role = body.role.parse().map_err(|message| {
        ApiError::from(ServiceError::BadRequest {
            field: Some("role".into()),
            message,
        })
    })?;
    let tenant = caller.tenant.clone();
    let created = service.create_key(&tenant, role, &body.name, &caller).await?;
    Ok((StatusCode::CREATED, Json(json!(created))).into_response())
}

/// `GET /v1/keys` (admin): the keys of the caller's tenant, without their secrets.
async fn list_keys(State(service): State<Service>, auth: Authed) -> Result<Json<Value>, ApiError> {
    let caller = auth.at_least(Role::Admin)?;
    Ok(Json(json!(service.keys(Some(&caller.tenant)).await?)))
}

/// `DELETE /v1/keys/{id}` (admin): revokes a key of the caller's tenant; 204.
async fn revoke_key(State(service): State<Service>, auth: Authed, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let caller = auth.at_least(Role::Admin)?;
    service.revoke_key(&id, &caller, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/audit` (admin): the tenant's latest audit entries.
async fn audit_log(State(service): State<Service>, auth: Authed, Query(query): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let caller = auth.at_least(Role::Admin)?;
    Ok(Json(json!(service.audit_log(&caller, query.limit()).await?)))
}

/// `POST /v1/migrate` (admin): migrates every model's tables.
async fn migrate(State(service): State<Service>, auth: Authed) -> Result<Json<Value>, ApiError> {
    let caller = auth.at_least(Role::Admin)?;
    Ok(Json(service.migrate(&caller).await?))
}

/// `GET /v1/openapi.json`: the OpenAPI 3.1 document of this API, with each served workflow's
/// input schema as the body of its submit route.
async fn openapi(State(service): State<Service>, auth: Authed) -> Result<Json<Value>, ApiError> {
    auth.at_least(Role::Viewer)?;
    Ok(Json(super::openapi::document(&service)))
}
