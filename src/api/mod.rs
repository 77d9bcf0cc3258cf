//! API: the HTTP interface under /v1, its OpenAPI document (/openapi.json) and reference
//! (/docs). Routing lives here; each resource has a module; authentication and rate limits are
//! layers (layers.rs); authorization is declared per handler through extractors (extract.rs);
//! errors become HTTP answers in one place (error.rs).

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Authenticator;
use crate::ops::Core;

pub mod account;
pub mod client;
pub mod dashboard;
pub mod egress;
pub mod entry;
pub mod envelope;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod hosts;
pub mod layers;
pub mod login;
pub mod metrics;
pub mod openapi;
pub mod portal;
pub mod recordings;
pub mod server;
pub mod sessions;
pub mod ssh_keys;
pub mod tasks;
pub mod tls;
pub mod tokens;
pub mod users;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 256 * 1024;
/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach: the domain operations' [`Core`] (through `Deref`), and what
/// only the HTTP face needs.
pub struct Shared {
    pub core: Core,
    pub auth: Authenticator,
    pub limits: Arc<layers::RateLimits>,
    pub ssh: Arc<crate::sshproxy::Proxy>,
    /// Open live event streams.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Bootstrap sessions.
    pub entry: entry::EntryState,
}

impl Deref for Shared {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice API",
        description = "Containers for users, each pinned to the egress an operator chose.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth"), (name = "users"), (name = "ssh keys"), (name = "egress"),
        (name = "hosts"), (name = "bindings"), (name = "tasks"), (name = "events"),
        (name = "dashboard"), (name = "tokens"), (name = "user portal"), (name = "health"),
        (name = "sessions"), (name = "entry"), (name = "metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A login token from /v1/auth/login, or an API token (sl_...).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let public = OpenApiRouter::new()
        .routes(routes!(login::login))
        .routes(routes!(login::admin_login))
        .routes(routes!(health::healthz))
        .routes(routes!(entry::entry_script))
        .routes(routes!(entry::entry_auth))
        .routes(routes!(entry::entry_task))
        .routes(routes!(entry::bootstrap_script))
        .routes(routes!(entry::bootstrap_start))
        .routes(routes!(entry::bootstrap_status))
        .routes(routes!(entry::bootstrap_handoff));

    let protected = OpenApiRouter::new()
        .routes(routes!(account::me))
        .routes(routes!(account::logout))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(users::rotate_password))
        .routes(routes!(users::set_expiry))
        .routes(routes!(ssh_keys::admin_list, ssh_keys::admin_add))
        .routes(routes!(ssh_keys::admin_generate))
        .routes(routes!(ssh_keys::admin_delete))
        .routes(routes!(egress::list, egress::create))
        .routes(routes!(egress::get, egress::update, egress::delete))
        .routes(routes!(egress::test))
        .routes(routes!(egress::host_check))
        .routes(routes!(hosts::list, hosts::create))
        .routes(routes!(hosts::get, hosts::delete))
        .routes(routes!(hosts::start))
        .routes(routes!(hosts::stop))
        .routes(routes!(hosts::rebuild))
        .routes(routes!(hosts::desktop_ticket))
        .routes(routes!(hosts::rotate_ssh_password))
        .routes(routes!(hosts::suspend))
        .routes(routes!(hosts::unsuspend))
        .routes(routes!(hosts::logs))
        .routes(routes!(dashboard::status))
        .routes(routes!(hosts::bind))
        .routes(routes!(hosts::unbind))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::get))
        .routes(routes!(events::list))
        .routes(routes!(events::stream))
        .routes(routes!(dashboard::stats))
        .routes(routes!(metrics::metrics))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(sessions::list))
        .routes(routes!(sessions::end))
        .routes(routes!(recordings::list))
        .routes(routes!(recordings::get))
        .routes(routes!(recordings::cast))
        .routes(routes!(portal::change_password))
        .routes(routes!(portal::list_hosts))
        .routes(routes!(portal::get_host))
        .routes(routes!(portal::rebuild_host))
        .routes(routes!(portal::desktop_ticket))
        .routes(routes!(ssh_keys::user_list, ssh_keys::user_add))
        .routes(routes!(ssh_keys::user_generate))
        .routes(routes!(ssh_keys::user_delete))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            layers::authenticate,
        ));

    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(public)
        .merge(protected)
        .split_for_parts();
    self::openapi::finish(&mut openapi);

    // MCP: authenticated like the API, then admitted by its own gate (mcp:access).
    let hosts =
        crate::mcp::allowed_hosts(state.public_host.as_deref(), state.public_url.as_deref());
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::service(state.clone(), hosts))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::mcp::gate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            layers::authenticate,
        ));

    api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .merge(mcp)
        .merge(crate::web::router(state.clone()))
        .fallback(not_found)
        // The limit is enforced where bodies are read (JsonBody), so the answer is our JSON 413.
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(layers::strict_transport))
        .layer(middleware::from_fn(crate::metrics::http_layer))
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            HeaderName::from_static("x-api-key"),
        ]))
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    error::ApiError::NotFound("route")
}
