//! The OpenAPI 3.1 document of the HTTP API, built from what the service serves: one submit
//! route per workflow whose request body is that workflow's input schema
//! ([`dataflow_runtime::Workflow::input_schema`]), the same schema a run is checked against.
//!
//! Built as JSON here rather than with a derive crate (utoipa, aide): the routes that matter
//! are per workflow and known only when the service has loaded its workflow files, and their
//! schemas are JSON Schema values already (OpenAPI 3.1's schema dialect).

use serde_json::{Map, Value, json};

use super::Service;

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn run_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Run"}}}})
}

/// The responses every authenticated route may give besides its own.
fn with_auth_errors(mut responses: Value) -> Value {
    responses["401"] = error_response("no API key, or an unknown or revoked one");
    responses["403"] = error_response("the key's role may not do this");
    responses
}

fn operation(summary: &str, tag: &str, responses: Value) -> Value {
    json!({"summary": summary, "tags": [tag], "responses": with_auth_errors(responses)})
}

fn id_parameter(description: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn limit_parameter() -> Value {
    json!({"name": "limit", "in": "query", "required": false, "description": "how many, newest first (default 50, at most 1000)", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}})
}

/// The document for `service`.
pub(crate) fn document(service: &Service) -> Value {
    let mut paths = Map::new();
    paths.insert(
        "/health".into(),
        json!({"get": operation("Each store, up or down, with its latency; the outbox backlog", "service", json!({
            "200": {"description": "every store is up", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
            "503": {"description": "a store is down", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}
        }))}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": operation("The process's metrics in the Prometheus text format", "service", json!({
            "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
        }))}),
    );
    paths.insert(
        "/v1/openapi.json".into(),
        json!({"get": operation("This document", "service", json!({"200": {"description": "the OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}))}),
    );
    paths.insert(
        "/v1/workflows".into(),
        json!({"get": operation("The workflows served, with their input schemas", "workflows", json!({"200": {"description": "the workflows", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}}}))}),
    );
    paths.insert(
        "/v1/nodes".into(),
        json!({"get": operation("Every node type with its input and output schema", "workflows", json!({"200": {"description": "the node types", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}}}))}),
    );
    for (name, workflow) in service.workflows() {
        let mut submit = operation(
            &format!("Submits a run of {name}"),
            "runs",
            json!({
                "200": run_response("with ?wait=true, the run once it ended; or the first run of a repeated Idempotency-Key"),
                "202": run_response("the run, queued (or, with ?wait=true, not ended when the wait was over)"),
                "400": error_response("the body is not JSON"),
                "413": error_response("the body is larger than 1 MiB"),
                "422": error_response("the input does not fit the workflow's inputs; each problem names its input"),
            }),
        );
        submit["operationId"] = json!(format!("submit_{name}"));
        submit["description"] = json!(workflow.def().description);
        submit["parameters"] = json!([
            {"name": "wait", "in": "query", "required": false, "description": "answer when the run has ended", "schema": {"type": "boolean"}},
            {"name": "wait_secs", "in": "query", "required": false, "description": "how long to wait (default 60, at most 600)", "schema": {"type": "integer", "minimum": 0}},
            {"name": "Idempotency-Key", "in": "header", "required": false, "description": "a second submit with the same key returns the first run", "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
        ]);
        submit["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": workflow.input_schema()}}});
        paths.insert(format!("/v1/workflows/{name}/runs"), json!({"post": submit}));
    }
    let mut list = operation(
        "The tenant's latest runs",
        "runs",
        json!({"200": {"description": "runs, newest first", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}}}}}}),
    );
    list["parameters"] = json!([limit_parameter()]);
    paths.insert("/v1/runs".into(), json!({"get": list}));
    let mut read = operation(
        "One run of the tenant",
        "runs",
        json!({"200": run_response("the run"), "404": error_response("no such run for the tenant")}),
    );
    read["parameters"] = json!([id_parameter("the run's id")]);
    paths.insert("/v1/runs/{id}".into(), json!({"get": read}));
    let mut cancel = operation(
        "Cancels a queued run",
        "runs",
        json!({"200": run_response("the run, cancelled"), "404": error_response("no such run for the tenant"), "409": error_response("the run has started")}),
    );
    cancel["parameters"] = json!([id_parameter("the run's id")]);
    paths.insert("/v1/runs/{id}/cancel".into(), json!({"post": cancel}));
    let mut events = operation(
        "The run's progress as Server-Sent Events: started, finished and items events, then end",
        "runs",
        json!({"200": {"description": "the event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, "404": error_response("no such run for the tenant")}),
    );
    events["parameters"] = json!([id_parameter("the run's id")]);
    paths.insert("/v1/runs/{id}/events".into(), json!({"get": events}));
    let mut create_key = operation(
        "Creates a key of the tenant (admin); its token is shown only here",
        "keys",
        json!({"201": {"description": "the key and its token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiKey"}}}}, "400": error_response("a bad role or body")}),
    );
    create_key["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object", "required": ["role"], "additionalProperties": false,
        "properties": {"role": {"enum": ["viewer", "operator", "admin"]}, "name": {"type": "string"}}
    }}}});
    let list_keys = operation(
        "The tenant's keys, without their secrets (admin)",
        "keys",
        json!({"200": {"description": "keys", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}}}}}),
    );
    paths.insert("/v1/keys".into(), json!({"get": list_keys, "post": create_key}));
    let mut revoke = operation(
        "Revokes a key of the tenant (admin)",
        "keys",
        json!({"204": {"description": "revoked"}, "404": error_response("no such unrevoked key for the tenant")}),
    );
    revoke["parameters"] = json!([id_parameter("the key's id")]);
    paths.insert("/v1/keys/{id}".into(), json!({"delete": revoke}));
    let mut audit = operation(
        "The tenant's latest audit entries (admin)",
        "keys",
        json!({"200": {"description": "entries, newest first", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}}}),
    );
    audit["parameters"] = json!([limit_parameter()]);
    paths.insert("/v1/audit".into(), json!({"get": audit}));
    paths.insert(
        "/v1/migrate".into(),
        json!({"post": operation("Migrates every model's tables (admin)", "service", json!({"200": {"description": "what the migration did", "content": {"application/json": {"schema": {"type": "object"}}}}}))}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "dataflow", "version": env!("CARGO_PKG_VERSION"), "description": "Typed data workflows over PostgreSQL, a Bolt graph, Chroma and Redis, served as runs on a durable queue."},
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "a key from `dataflow keys create`: dfk_<id>_<secret>"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["status", "message"], "properties": {
                    "status": {"type": "integer"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]},
                    "problems": {"type": "array", "items": {"type": "object", "properties": {"input": {"type": ["string", "null"]}, "message": {"type": "string"}}}},
                    "line": {"type": "integer"}, "column": {"type": "integer"}
                }}}},
                "Run": {"type": "object", "required": ["id", "tenant", "workflow", "status", "attempts", "submitted_by", "submitted_at"], "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"}, "workflow": {"type": "string"},
                    "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                    "input": {}, "outputs": {"type": ["object", "null"]}, "report": {"type": ["object", "null"]}, "error": {"type": ["string", "null"]},
                    "attempts": {"type": "integer"}, "worker": {"type": ["string", "null"]}, "idempotency_key": {"type": ["string", "null"]},
                    "submitted_by": {"type": "string"}, "submitted_at": {"type": "string"}, "started_at": {"type": ["string", "null"]}, "finished_at": {"type": ["string", "null"]}
                }},
                "ApiKey": {"type": "object", "required": ["id", "tenant", "role", "name", "created_at"], "properties": {
                    "id": {"type": "string"}, "tenant": {"type": "string"}, "role": {"enum": ["viewer", "operator", "admin"]}, "name": {"type": "string"},
                    "created_at": {"type": "string"}, "revoked_at": {"type": ["string", "null"]}, "token": {"type": "string", "description": "only when created"}
                }},
                "Health": {"type": "object", "required": ["status", "stores"], "properties": {"status": {"enum": ["up", "down"]}, "stores": {"type": "object"}, "outbox": {"type": "object"}}}
            }
        }
    })
}
