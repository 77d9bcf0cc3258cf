//! The web face: server-rendered pages (askama templates in `templates/`, checked at compile
//! time, escaped by default) for the admin dashboard and the user portal, a small script for
//! the live parts (`web/static/app.js`: copy buttons, host status following the event stream),
//! all served by Sluice itself (nothing from elsewhere; it works offline). Pages translate
//! only: every action is a domain operation (`ops/`). Sessions, CSRF and Origin checks live in
//! `session.rs`; every answer carries a strict Content-Security-Policy.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::AppState;

mod activity;
mod desktop;
mod egress;
mod pages;
mod recordings;
pub mod session;
mod terminal;
mod users;

const APP_CSS: &str = include_str!("../../web/static/app.css");
const APP_JS: &str = include_str!("../../web/static/app.js");
const TERMINAL_JS: &str = include_str!("../../web/static/terminal.js");
const PLAYER_JS: &str = include_str!("../../web/static/player.js");
const XTERM_JS: &str = include_str!("../../web/static/vendor/xterm.js");
const DESKTOP_JS: &str = include_str!("../../web/static/desktop.js");
const NOVNC_JS: &str = include_str!("../../web/static/vendor/novnc.js");
const XTERM_CSS: &str = include_str!("../../web/static/vendor/xterm.css");

/// The pages, their assets and the browser's event stream.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/admin", get(pages::overview))
        .route("/admin/hosts", get(pages::hosts).post(pages::create_host))
        .route("/admin/hosts/{id}", get(pages::host))
        .route("/admin/hosts/{id}/bind", post(pages::bind))
        .route("/admin/hosts/{id}/{action}", post(pages::host_action))
        .route("/admin/bindings/{id}/delete", post(pages::unbind))
        .route("/admin/users", get(pages::users).post(pages::create_user))
        .route("/admin/users/{id}", get(users::show))
        .route("/admin/users/{id}/{action}", post(users::action))
        .route(
            "/admin/users/{id}/keys/{key_id}/delete",
            post(users::delete_key),
        )
        .route("/admin/egress", get(egress::list).post(egress::create))
        .route("/admin/egress/{id}", get(egress::edit).post(egress::update))
        .route("/admin/egress/{id}/{action}", post(egress::action))
        .route("/admin/sessions", get(activity::sessions))
        .route("/admin/sessions/{id}/end", post(activity::end_session))
        .route("/admin/recordings", get(recordings::list))
        .route("/admin/recordings/{id}", get(recordings::player))
        .route("/admin/recordings/{id}/cast", get(recordings::cast))
        .route("/admin/tasks", get(activity::tasks))
        .route("/admin/events", get(activity::events))
        .route(
            "/admin/tokens",
            get(activity::tokens).post(activity::create_token),
        )
        .route("/admin/tokens/{id}/revoke", post(activity::revoke_token))
        .route("/portal", get(pages::portal))
        .route("/portal/hosts/{id}/{action}", post(pages::portal_host))
        .route("/portal/keys", post(pages::portal_add_key))
        .route("/portal/keys/generate", post(pages::portal_generate_key))
        .route(
            "/portal/keys/{key_id}/delete",
            post(pages::portal_delete_key),
        )
        .route("/portal/password", post(pages::portal_password))
        .route("/web/events", get(pages::events))
        .route("/web/hosts/{id}", get(pages::host_status))
        .route("/web/hosts/{id}/terminal", get(terminal::page))
        .route("/web/hosts/{id}/terminal/socket", get(terminal::socket))
        // The reference's desktop routes: the page (also as vnc.html) and its WebSocket.
        .route("/v1/admin/hosts/{id}/vnc/", get(desktop::page))
        .route("/v1/admin/hosts/{id}/vnc/vnc.html", get(desktop::page))
        .route("/v1/admin/hosts/{id}/vnc/websockify", get(desktop::socket))
        .route("/v1/user/hosts/{id}/vnc/", get(desktop::page))
        .route("/v1/user/hosts/{id}/vnc/vnc.html", get(desktop::page))
        .route("/v1/user/hosts/{id}/vnc/websockify", get(desktop::socket))
        .route("/web/hosts/{id}/desktop/ticket", post(desktop::ticket))
        .route(
            "/static/desktop.js",
            get(|| asset(DESKTOP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/static/vendor/novnc.js",
            get(|| asset(NOVNC_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/static/terminal.js",
            get(|| asset(TERMINAL_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/static/player.js",
            get(|| asset(PLAYER_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/static/vendor/xterm.js",
            get(|| asset(XTERM_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/static/vendor/xterm.css",
            get(|| asset(XTERM_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/static/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/static/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// What every page answer carries: no script but Sluice's own files, no inline script or
/// style, no framing, no referrer to other sites, no type sniffing.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not no-referrer: with it, browsers send `Origin: null` on this site's own form posts.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}
