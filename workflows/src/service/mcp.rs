//! The MCP server (the official `rmcp` crate): every served workflow is a tool whose input
//! schema is the workflow's; calling it submits a run, waits for it, and returns its outputs.
//!
//! Two transports: stdio (`dataflow mcp`, for an assistant that starts the server itself;
//! it acts for the `tenant` setting with the operator role) and streamable HTTP at `/mcp` of
//! `dataflow serve`, behind the same API keys as the rest of the API ([`router`]). Each call
//! is a run like any other: recorded, queued, executed by a worker, in the audit log.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

use super::api::Authed;
use super::{Caller, Role, Service, ServiceError};

/// Longest a tool call waits for its run.
const CALL_WAIT: Duration = Duration::from_secs(600);

/// The MCP handler over a [`Service`]: tools are its workflows.
#[derive(Clone)]
pub struct Tools {
    service: Service,
    /// The caller of every call, over stdio; over HTTP each request's key says.
    local: Option<Caller>,
}

impl Tools {
    /// The caller of a request: the stdio caller, or the one the HTTP layer put beside the
    /// request.
    fn caller(&self, context: &RequestContext<RoleServer>) -> Option<Caller> {
        if let Some(local) = &self.local {
            return Some(local.clone());
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>().cloned())
    }

    fn tool(name: &str, workflow: &dataflow_runtime::Workflow) -> Tool {
        let schema = match workflow.input_schema() {
            Value::Object(schema) => schema,
            _ => Default::default(),
        };
        let description = workflow.def().description.trim().to_owned();
        Tool::new(name.to_owned(), description, Arc::new(schema))
    }

    /// Runs workflow `name` with `arguments` for `caller` and waits for it to end.
    async fn call(&self, name: &str, arguments: Value, caller: &Caller) -> Result<CallToolResult, ServiceError> {
        if caller.role < Role::Operator {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "running a workflow needs the operator role; the key has {}",
                caller.role
            ))]));
        }
        let submitted = match self.service.submit(name, arguments, None, caller).await {
            Ok(submitted) => submitted,
            Err(e @ (ServiceError::BadInput { .. } | ServiceError::BadRequest { .. })) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]));
            }
            Err(e) => return Err(e),
        };
        let run = self.service.wait(&submitted.run.id, caller, CALL_WAIT).await?;
        let result = json!({"run": run.id, "status": run.status, "outputs": run.outputs, "error": run.error});
        Ok(match run.status {
            super::RunState::Succeeded => CallToolResult::structured(result),
            _ => CallToolResult::structured_error(result),
        })
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        let mut config = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        config.server_info = Implementation::new("dataflow", env!("CARGO_PKG_VERSION"));
        config.instructions = Some(
            "Each tool runs a dataflow workflow over the product catalogue (classify a product, recommend products for a project, check compliance, import a catalogue) and returns its outputs.".into(),
        );
        config
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self
            .service
            .workflows()
            .iter()
            .map(|(name, workflow)| Self::tool(name, workflow))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.service.workflows().get(name).map(|workflow| Self::tool(name, workflow))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let Some(caller) = self.caller(&context) else {
            return Err(ErrorData::internal_error("no caller for the request", None));
        };
        if self.service.workflows().get(request.name.as_ref()).is_none() {
            return Err(ErrorData::invalid_params(format!("no tool '{}'", request.name), None));
        }
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        match self.call(&request.name, arguments, &caller).await {
            Ok(result) => Ok(result.into()),
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into()),
        }
    }
}

/// Serves the tools over stdio until the client closes it, acting for `tenant`.
pub async fn serve_stdio(service: Service, tenant: &str) -> Result<(), ServiceError> {
    super::auth::check_tenant(tenant)?;
    let tools = Tools {
        service,
        local: Some(Caller {
            actor: "mcp".into(),
            tenant: tenant.to_owned(),
            role: Role::Operator,
            remote: "local".into(),
        }),
    };
    let running = tools
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServiceError::Unsupported(format!("the MCP session did not start: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| ServiceError::Unsupported(format!("the MCP session failed: {e}")))?;
    Ok(())
}

/// The streamable HTTP MCP endpoint, to nest at `/mcp`: every request needs an API key, as
/// the rest of the API.
pub fn router(service: Service) -> Router {
    let tools = Tools {
        service: service.clone(),
        local: None,
    };
    let mcp = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    Router::new()
        .fallback_service(mcp)
        .layer(middleware::from_fn_with_state(service, authenticate))
}

/// Puts the request's [`Caller`] beside it, or answers 401 as the API does.
async fn authenticate(State(service): State<Service>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match <Authed as axum::extract::FromRequestParts<Service>>::from_request_parts(&mut parts, &service).await {
        Ok(Authed(caller)) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(rejection) => rejection.into_response(),
    }
}
