//! One error type for every handler, rendered as `application/problem+json` (RFC 9457).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem to report to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short slug; the problem type is `/problems/{slug}`.
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The request field at fault, as a path such as `[1].value`.
    pub field: Option<String>,
    /// Every fault, where there are several (each bad row of a batch).
    pub errors: Vec<FieldError>,
    /// Seconds after which a refused request may be tried again (`Retry-After`).
    pub retry_after: Option<std::num::NonZeroU32>,
}

pub use domain::cut;

/// A detail as it goes back: a detail quotes values already cut, so only a runaway one
/// is cut here.
fn cut_detail(detail: &str) -> std::borrow::Cow<'_, str> {
    domain::cut_to(detail, domain::TEXT_CHARS)
}

/// Most faults listed in one answer; the rest are counted in a last entry.
pub const MAX_ERRORS: usize = 100;

/// One fault of a request with several.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            slug: "invalid-request",
            title: "The request is malformed",
            detail: detail.into(),
            field: Some(field.into()),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn unprocessable(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            slug: "unprocessable",
            title: "The request is well formed but its content cannot be accepted",
            detail: detail.into(),
            field: Some(field.into()),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            slug: "unauthorized",
            title: "Authentication is required",
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            slug: "forbidden",
            title: "The token's role does not allow this",
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            slug: "conflict",
            title: "Conflict with the current state",
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            slug: "not-found",
            title: "Not found",
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            slug: "unsupported-media-type",
            title: "The body's media type is not accepted here",
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        // The detail goes to the log, not to the client.
        tracing::error!(error = %detail, "request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            slug: "internal",
            title: "Internal error",
            detail: "the server could not complete the request; see its log".into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            slug: "too-large",
            title: "The request body is too large",
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn too_many(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            slug: "too-many-requests",
            title: "Too many requests",
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            slug: "unavailable",
            title: "Not ready",
            detail: detail.into(),
            field: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }
}

/// Fails with 415 unless the request's media type is one of `accepted`; returns its index.
pub fn require_media(headers: &axum::http::HeaderMap, accepted: &[&str]) -> Result<usize, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if let Some(i) = media
        .as_deref()
        .and_then(|m| accepted.iter().position(|a| *a == m))
    {
        Ok(i)
    } else {
        Err(ApiError::unsupported_media(format!(
            "send Content-Type: {}",
            accepted.first().copied().unwrap_or("application/json")
        )))
    }
}

impl ApiError {
    /// Says when to try again (`Retry-After`, whole seconds, at least 1).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
        self.retry_after = std::num::NonZeroU32::new(secs);
        self
    }

    /// Attaches every fault (up to [`MAX_ERRORS`], then how many more); the first stays
    /// in `field` and `detail`.
    pub fn with_errors(mut self, mut errors: Vec<FieldError>) -> Self {
        if errors.len() > MAX_ERRORS {
            let more = errors.len() - MAX_ERRORS;
            errors.truncate(MAX_ERRORS);
            errors.push(FieldError {
                field: "…".into(),
                detail: format!("and {more} more faults like these"),
            });
        }
        self.errors = errors;
        self
    }
}

impl From<desk::DeskError> for ApiError {
    fn from(e: desk::DeskError) -> Self {
        match e {
            desk::DeskError::Store(s) => s.into(),
            other => Self::internal(other),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        if e.is_unavailable() {
            // Nothing was written (the transaction did not commit): the client may retry.
            tracing::error!(error = %e, "request failed: database unavailable");
            return Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                slug: "database-unavailable",
                title: "Database unavailable",
                detail: "the database is locked or unreachable; nothing was written; retry shortly".into(),
                field: None,
                errors: Vec::new(),
                retry_after: None,
            };
        }
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Whatever a handler put in, no client value goes back longer than a few hundred
        // characters.
        let errors: Vec<FieldError> = self
            .errors
            .iter()
            .map(|e| FieldError {
                field: cut(&e.field).into_owned(),
                detail: cut_detail(&e.detail).into_owned(),
            })
            .collect();
        let field = self.field.as_deref().map(cut);
        let detail = cut_detail(&self.detail);
        let body = Problem {
            kind: format!("/problems/{}", self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: &detail,
            field: field.as_deref(),
            errors: &errors,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, bytes).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.get()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Query parameters, refused as `application/problem+json` (axum's own `Query` answers
/// in plain text) when they do not parse.
pub struct Q<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Q<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(t)| Q(t))
            .map_err(|e| ApiError::bad_request("query", e.body_text()))
    }
}

/// Gives axum's own refusals (a body over the limit, a wrong method, a path or query
/// that does not parse), which answer in plain text, the same `application/problem+json`
/// shape as every other error. Other responses pass untouched.
pub async fn problem_for_plain(resp: Response) -> Response {
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("text/plain"));
    if !(status.is_client_error() && plain) {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let body = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).trim().to_owned();
    let (slug, title): (&'static str, &'static str) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("too-large", "The request body is too large"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "The endpoint does not take this method"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        _ => ("invalid-request", "The request is malformed"),
    };
    let mut out = ApiError {
        status,
        slug,
        title,
        detail: if detail.is_empty() {
            title.to_owned()
        } else {
            detail
        },
        field: None,
        errors: Vec::new(),
        retry_after: None,
    }
    .into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}
