//! MCP at `/mcp`: Sluice's operations as tools for AI agents, over Streamable HTTP (rmcp),
//! stateless (every request carries its bearer credential; no session state to grow). The
//! HTTP gate in front (`gate`) admits administrators and API tokens holding `mcp:access`;
//! each tool also needs the ability of its REST operation, `tools/list` shows a caller only
//! the tools it may call, and every call is an audit event. The tools translate only: the
//! rules are the domain layer's (`ops/`). `tools.rs` is the catalogue.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::json;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::{Ability, Principal};
use crate::events::{self, NewEvent};
use crate::ops::{Caller, Face, OpError};

mod tools;

/// The MCP server for one request: the shared state; the caller comes with each request.
#[derive(Clone)]
pub struct SluiceMcp {
    state: AppState,
}

/// The Streamable HTTP service to nest at `/mcp`. `allowed_hosts` is the Host allow-list
/// (DNS-rebinding protection): the public host and URL's host, plus loopback.
pub fn service(
    state: AppState,
    allowed_hosts: Vec<String>,
) -> StreamableHttpService<SluiceMcp, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(allowed_hosts)
        .with_max_request_body_bytes(crate::api::BODY_LIMIT);
    StreamableHttpService::new(
        move || {
            Ok(SluiceMcp {
                state: state.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The hosts `/mcp` answers to: loopback, and the configured public host and URL's host.
pub fn allowed_hosts(public_host: Option<&str>, public_url: Option<&str>) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
        .into_iter()
        .map(String::from)
        .collect();
    if let Some(h) = public_host {
        hosts.push(h.to_string());
    }
    if let Some(url) = public_url {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        hosts.push(authority.to_string());
        let host_only = if authority.starts_with('[') {
            authority.split(']').next().map(|h| format!("{h}]"))
        } else {
            authority.split(':').next().map(String::from)
        };
        hosts.extend(host_only);
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The HTTP gate of `/mcp`, after authentication: administrators, and tokens holding
/// `mcp:access`. Users get 403 (their portal is the API's `/v1/user`).
pub async fn gate(State(_): State<AppState>, req: Request, next: Next) -> Response {
    let allowed = match req.extensions().get::<Principal>() {
        None => return ApiError::Unauthorized("missing bearer credentials".into()).into_response(),
        Some(p @ Principal::Token { .. }) => p.can(Ability::McpAccess),
        Some(p @ Principal::Account { .. }) => p.can(Ability::All),
        Some(_) => false,
    };
    if !allowed {
        let why = match req.extensions().get::<Principal>() {
            Some(Principal::Token { .. }) => "this token lacks the ability mcp:access",
            _ => "MCP is for administrators and API tokens with mcp:access",
        };
        return ApiError::Forbidden(why.into()).into_response();
    }
    next.run(req).await
}

/// The caller of an MCP request, from what the HTTP layers put into the request.
fn caller(ctx: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
    let parts = ctx
        .extensions
        .get::<axum::http::request::Parts>()
        .ok_or_else(|| McpError::internal_error("the HTTP request is missing", None))?;
    let principal = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| McpError::invalid_request("not authenticated", None))?;
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    Ok(Caller::new(principal, source, Face::Mcp))
}

/// A domain refusal as the tool's answer: an error result the agent reads, with the fields.
fn refusal(e: &OpError) -> CallToolResult {
    let mut body = json!({"error": e.to_string()});
    if let OpError::Invalid(fields) = e {
        body["fields"] = json!(fields.0);
    }
    if let OpError::Store(_) | OpError::Auth(_) | OpError::Internal(_) = e {
        tracing::error!(error = %e, "MCP tool failed");
        body = json!({"error": "internal error"});
    }
    CallToolResult::structured_error(body)
}

impl ServerHandler for SluiceMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("sluice", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Sluice runs a container (host) per user, each leaving the network only through \
                 the egress an operator bound to it. Long operations answer a task_id: poll it \
                 with task_get until its status is succeeded or failed.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = caller(&context)?;
        Ok(ListToolsResult::with_all_items(tools::visible_to(&caller)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = caller(&context)?;
        let name = request.name.to_string();
        let Some(spec) = tools::find(&name) else {
            return Err(McpError::invalid_params(
                format!("no tool named {name}"),
                None,
            ));
        };
        let outcome = if caller.principal.can(spec.ability) {
            tools::call(
                &self.state,
                &caller,
                spec,
                request.arguments.unwrap_or_default(),
            )
            .await
        } else {
            Err(tools::ToolError::Refused(format!(
                "tool {name} needs the ability {}, which this caller lacks",
                spec.ability
            )))
        };
        let (ok, error) = match &outcome {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e.to_string())),
        };
        events::record_alone(
            &self.state.store,
            NewEvent::new(caller.actor(), "mcp.tool_called", "mcp")
                .source(caller.source.clone())
                .details(json!({"tool": name, "ok": ok, "error": error})),
        )
        .await;
        match outcome {
            Ok(value) => Ok(CallToolResult::structured(value).into()),
            Err(tools::ToolError::Op(e)) => Ok(refusal(&e).into()),
            Err(tools::ToolError::Arguments(m)) => Ok(CallToolResult::structured_error(
                json!({"error": format!("invalid arguments: {m}")}),
            )
            .into()),
            Err(tools::ToolError::Refused(m)) => Err(McpError::invalid_params(m, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_holds_loopback_and_the_public_names() {
        let h = allowed_hosts(
            Some("sluice.example.org"),
            Some("https://panel.example.org:8443/"),
        );
        for want in [
            "localhost",
            "127.0.0.1",
            "sluice.example.org",
            "panel.example.org:8443",
            "panel.example.org",
        ] {
            assert!(h.iter().any(|x| x == want), "{want} missing from {h:?}");
        }
        let bare = allowed_hosts(None, None);
        assert!(!bare.iter().any(|x| x.contains("example")));
    }
}
