//! Cross-cutting layers of the API: authentication (bearer credential to [`Principal`]) and
//! rate limiting (per credential, per source address, per login name).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Principal};

/// Keyed rate limiters, each "n per minute" with a burst of n.
pub struct RateLimits {
    /// Every authenticated request, per credential.
    pub api: DefaultKeyedRateLimiter<String>,
    /// Logins, per source address and user name.
    pub login: DefaultKeyedRateLimiter<(Option<IpAddr>, String)>,
    /// Token creation, per credential.
    pub token_create: DefaultKeyedRateLimiter<String>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl RateLimits {
    pub fn new(api_per_minute: u32) -> Self {
        Self {
            api: RateLimiter::keyed(per_minute(api_per_minute)),
            login: RateLimiter::keyed(per_minute(5)),
            token_create: RateLimiter::keyed(per_minute(10)),
        }
    }

    /// Drops the state of keys that have fully recovered, so memory stays bounded.
    pub fn shrink(&self) {
        self.api.retain_recent();
        self.login.retain_recent();
        self.token_create.retain_recent();
    }
}

/// Checks a keyed limiter: `Err(429 with Retry-After)` when over the limit.
pub fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::TooManyRequests {
            retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    })
}

/// Resolves the bearer credential into a [`Principal`] in the request's extensions, then
/// applies the per-credential rate limit. No or bad credentials: 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let Some(bearer) = bearer else {
        return ApiError::from(AuthError::Missing).into_response();
    };
    let principal: Principal = match state.auth.authenticate(&bearer).await {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Err(e) = check(&state.limits.api, &principal.rate_key()) {
        return e.into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Shrinks the limiters' state every few minutes, for the life of the process.
pub fn spawn_shrinker(limits: Arc<RateLimits>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(300)).await;
            limits.shrink();
        }
    });
}

/// Answers given over https (directly, or as a trusted proxy says) tell browsers to reach this
/// site over https only, for a year (HSTS), so a later plain-http link cannot strip TLS.
pub async fn strict_transport(req: Request, next: Next) -> Response {
    let https = req
        .extensions()
        .get::<super::client::Client>()
        .is_some_and(|c| c.https);
    let mut resp = next.run(req).await;
    if https {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            axum::http::HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}
