//! The one place where errors become HTTP answers:
//! `{"message": ..., "errors": {"field": ["..."]}}` with the right status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::store::StoreError;
use crate::validation::FieldErrors;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Validation {
        message: String,
        errors: FieldErrors,
    },
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("too many requests, retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 422 naming every bad field.
    pub fn invalid(errors: FieldErrors) -> Self {
        let message = if errors.is_empty() {
            "the request is invalid".into()
        } else {
            errors.summary()
        };
        ApiError::Validation { message, errors }
    }

    /// A 422 on one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid(FieldErrors::one(field, message))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => ApiError::Conflict("already exists".into()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Seconds a caller is asked to wait when every password-hashing slot is taken.
const BUSY_RETRY_AFTER: u64 = 2;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => ApiError::Unauthorized("missing bearer credentials".into()),
            AuthError::Invalid => ApiError::Unauthorized("invalid or expired credentials".into()),
            AuthError::Inactive(what) => ApiError::Unauthorized(format!("account is {what}")),
            AuthError::Store(s) => s.into(),
            AuthError::Hash(h) => ApiError::Internal(h),
            AuthError::Busy => ApiError::TooManyRequests {
                retry_after: BUSY_RETRY_AFTER,
            },
        }
    }
}

/// The one mapping of domain refusals to HTTP.
impl From<crate::ops::OpError> for ApiError {
    fn from(e: crate::ops::OpError) -> Self {
        use crate::ops::OpError;
        match e {
            OpError::NotFound(what) => ApiError::NotFound(what),
            OpError::Invalid(errors) => ApiError::invalid(errors),
            OpError::Conflict(m) => ApiError::Conflict(m),
            OpError::Forbidden(m) => ApiError::Forbidden(m),
            OpError::Unavailable(m) | OpError::ServerOnly(m) => ApiError::Conflict(m),
            OpError::Store(s) => s.into(),
            OpError::Auth(a) => a.into(),
            OpError::Internal(m) => ApiError::Internal(m),
            OpError::Busy(retry_after) => ApiError::TooManyRequests { retry_after },
        }
    }
}

impl From<crate::auth::attempts::Refused> for ApiError {
    fn from(r: crate::auth::attempts::Refused) -> Self {
        ApiError::TooManyRequests {
            retry_after: r.retry_after_secs(),
        }
    }
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, Vec<String>>,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let errors = match &self {
            ApiError::Validation { errors, .. } => errors.0.clone(),
            _ => BTreeMap::new(),
        };
        let body = ErrorBody {
            message: self.to_string(),
            errors,
        };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::Unauthorized(_) = self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::TooManyRequests { retry_after } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
