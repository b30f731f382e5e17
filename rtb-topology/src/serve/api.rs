//! The API's error responses and its validating JSON body extractor.
//!
//! Every error is JSON: `{"error": "<kind>", "message": "...", "field": "<path>"}` (`field` when one field
//! is to blame). A body that is not JSON, or does not fit the route's schema, is a 400 naming the field
//! and why (`serde_path_to_error` gives the path, as in `[2].timestamp`); a body over the size limit is
//! a 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable kind (`bad_request`, `not_found`, ...).
    pub error: &'static str,
    /// What went wrong.
    pub message: String,
    /// The field to blame, if one is.
    pub field: Option<String>,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Kind: bad_request, unauthorized, forbidden, not_found, conflict, payload_too_large, internal, unavailable.
    pub error: String,
    /// What went wrong (names the field for a 400 about one).
    pub message: String,
    /// The field to blame (`[2].timestamp` in a batch), if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self { status, error, message: message.into(), field: None }
    }
    /// 400 naming `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("`{field}`: {}", message.into());
        Self { field: Some(field), ..Self::new(StatusCode::BAD_REQUEST, "bad_request", message) }
    }
    /// 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 409: the request conflicts with the current state (e.g. resuming a deleted campaign).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    /// 500: a store or the log failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    /// 503: not ready, or shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        }
        let body = ErrorBody { error: self.error.to_string(), message: self.message, field: self.field };
        (self.status, Json(body)).into_response()
    }
}

impl From<rtb_ops::Error> for ApiError {
    fn from(e: rtb_ops::Error) -> Self {
        ApiError::internal(format!("store: {e}"))
    }
}

impl From<rtb_stream::Error> for ApiError {
    fn from(e: rtb_stream::Error) -> Self {
        ApiError::internal(format!("log: {e}"))
    }
}

/// A JSON body of type `T`, with errors that name the field.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = raw_body(req, state).await?;
        parse(&bytes).map(Body)
    }
}

/// The body's bytes; 413 past the route's limit.
pub async fn raw_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("the request body is larger than the limit ({e})"))
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

/// Deserialises `bytes` as `T`; a 400 naming the field on failure.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::bad_request(format!("the body is not valid JSON: {inner}")));
            }
            let text = inner.to_string();
            // serde reports a missing or unknown field at its parent's path: name the field itself.
            let named = ["missing field `", "unknown field `"]
                .iter()
                .find_map(|p| text.strip_prefix(p))
                .and_then(|rest| rest.split('`').next());
            let field = match (named, path.as_str()) {
                // An unknown field's path already ends with it.
                (Some(f), p) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
                (Some(f), "." | "") => f.to_string(),
                (Some(f), parent) => format!("{parent}.{f}"),
                (None, "." | "") => return Err(ApiError::bad_request(format!("the body does not fit the schema: {text}"))),
                (None, p) => p.to_string(),
            };
            let message = text.split(" at line ").next().unwrap_or(&text).to_string();
            return Err(ApiError::field(field, message));
        }
    };
    de.end().map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}
