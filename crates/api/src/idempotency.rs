//! `Idempotency-Key` on every request that can send a warning (submit, approve, confirm,
//! cancel). The first request with a key runs; every retry with the same key and the
//! same request gets the first response again (with `Idempotent-Replayed: true`) and
//! runs nothing. A retry that arrives while the first still runs waits for its answer.
//! The same key with a different request is refused (422). Keys are per caller.
//!
//! This is the replay of answers; what stops a second send is the state change each
//! action makes in its own transaction (a warning is issued from `pending` once, an alert
//! is cancelled once), which holds even for two different keys.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use store::IdempotencyBegin;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::{AppState, FORM_BODY_BYTES};

pub const HEADER: &str = "idempotency-key";
/// How long a retry waits for the first request's answer.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(20);
/// Largest response kept for replay.
const MAX_KEPT_RESPONSE: usize = 1024 * 1024;

/// The state of the middleware: the app, and the roles the route allows (checked first,
/// so that a caller without the role gets 403 whatever their headers).
#[derive(Clone)]
pub struct Sends {
    pub state: AppState,
    pub roles: &'static [Role],
}

/// The middleware: `route_layer(from_fn_with_state(Sends { .. }, idempotency::require))`.
pub async fn require(State(sends): State<Sends>, req: Request, next: Next) -> Response {
    match run(&sends, req, next).await {
        Ok(r) | Err(r) => r,
    }
}

fn key_of(req: &Request) -> Result<String, ApiError> {
    let value = req.headers().get(HEADER).ok_or_else(|| {
        ApiError::bad_request(
            "Idempotency-Key",
            "this request can send a warning: give it an Idempotency-Key header (a UUID), and the same key on every retry",
        )
    })?;
    match value.to_str() {
        Ok(k) if (8..=128).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => Ok(k.to_owned()),
        _ => Err(ApiError::bad_request(
            "Idempotency-Key",
            "the Idempotency-Key must be 8 to 128 visible ASCII characters",
        )),
    }
}

/// Set on a request that takes over the claim of one whose instance died after it sent
/// this alert: the handler answers with it as it would have, and sends nothing again.
#[derive(Debug, Clone)]
pub struct Replay(pub String);

async fn run(sends: &Sends, req: Request, next: Next) -> Result<Response, Response> {
    let state = &sends.state;
    let (mut parts, body) = req.into_parts();
    // Who asks comes first: without a valid token and the role, nothing else matters.
    let caller = Caller::from_request_parts(&mut parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    caller
        .require(sends.roles, &format!("{} {}", parts.method, parts.uri.path()))
        .map_err(IntoResponse::into_response)?;
    let key =
        key_of(&Request::from_parts(parts.clone(), Body::empty())).map_err(IntoResponse::into_response)?;
    // Every route that sends is a form.
    let bytes = to_bytes(body, FORM_BODY_BYTES).await.map_err(|_| {
        ApiError::too_large(format!("the body is over {FORM_BODY_BYTES} bytes")).into_response()
    })?;
    let mut h = Sha256::new();
    h.update(parts.method.as_str().as_bytes());
    h.update(b"\n");
    h.update(parts.uri.path().as_bytes());
    h.update(b"\n");
    h.update(&bytes);
    let request: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let scope = caller.label.clone();
    let started = tokio::time::Instant::now();
    let mut last_claim = started;
    let mut begun = state
        .store
        .idempotency_begin(&scope, &key, &request, chrono::Utc::now())
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let mut replay = None;
    loop {
        match begun {
            IdempotencyBegin::Run => break,
            IdempotencyBegin::Resume { alert_id } => {
                tracing::warn!(alert_id = %alert_id, "a retry takes over a request whose instance died after it sent its alert; it answers with that alert");
                replay = Some(Replay(alert_id));
                break;
            }
            IdempotencyBegin::Running { same: false } | IdempotencyBegin::Done { same: false, .. } => {
                return Err(ApiError::unprocessable(
                    "Idempotency-Key",
                    "this Idempotency-Key was used for a different request; use a new key for a new request",
                )
                .into_response());
            }
            IdempotencyBegin::Running { same: true } => {
                if started.elapsed() > WAIT_FOR_FIRST {
                    return Err(ApiError::conflict(
                        "the first request with this Idempotency-Key is still running; retry later with the same key",
                    )
                    .into_response());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Read while waiting; claim again if the first let go, and once a second
                // (the claim taken over if its instance died: its lease ran out).
                let peeked = state
                    .store
                    .idempotency_peek(&scope, &key, &request)
                    .await
                    .map_err(|e| ApiError::from(e).into_response())?;
                begun = match peeked {
                    Some(b @ IdempotencyBegin::Running { .. })
                        if last_claim.elapsed() < Duration::from_secs(1) =>
                    {
                        b
                    }
                    Some(b @ IdempotencyBegin::Done { .. }) => b,
                    _ => {
                        last_claim = tokio::time::Instant::now();
                        state
                            .store
                            .idempotency_begin(&scope, &key, &request, chrono::Utc::now())
                            .await
                            .map_err(|e| ApiError::from(e).into_response())?
                    }
                };
            }
            IdempotencyBegin::Done {
                status,
                content_type,
                body,
                ..
            } => {
                let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
                if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(resp);
            }
        }
    }
    // The request runs, and its answer is kept, in a task of its own: a client that hangs
    // up does not cut it short, and its retry gets the answer.
    let store = state.store.clone();
    if let Some(r) = replay {
        parts.extensions.insert(r);
    }
    let claim = store::Claim {
        scope: scope.clone(),
        key: key.clone(),
    };
    let task = tokio::spawn(async move {
        // While it runs, its claim's lease is renewed: a retry waits for it, however long
        // it takes, and takes over only if this instance dies.
        let renew = {
            let (store, scope, key) = (store.clone(), scope.clone(), key.clone());
            async move {
                loop {
                    tokio::time::sleep(store::LEASE_RENEWAL).await;
                    if let Err(e) = store.idempotency_renew(&scope, &key, chrono::Utc::now()).await {
                        tracing::warn!(error = %e, "the lease of an Idempotency-Key claim could not be renewed");
                    }
                }
            }
        };
        // An alert the request sends is recorded on its claim as it is inserted.
        let run = store::CLAIM.scope(claim, next.run(Request::from_parts(parts, Body::from(bytes))));
        let resp = tokio::select! {
            resp = run => resp,
            never = renew => never,
        };
        let (rparts, rbody) = resp.into_parts();
        let rbytes = match to_bytes(rbody, MAX_KEPT_RESPONSE).await {
            Ok(b) => b,
            Err(e) => {
                let _ = store.idempotency_abandon(&scope, &key).await;
                return ApiError::internal(format!("response could not be read: {e}")).into_response();
            }
        };
        let status = rparts.status;
        // A refusal before anything was done is not kept: a retry (after a login, or
        // once the server is healthy) should run. Everything else is the answer.
        let kept = if status.is_server_error()
            || matches!(
                status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
            ) {
            store.idempotency_abandon(&scope, &key).await
        } else {
            let ct = rparts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            store
                .idempotency_finish(&scope, &key, status.as_u16(), ct, &rbytes)
                .await
        };
        if let Err(e) = kept {
            tracing::error!(error = %e, "the answer to an Idempotency-Key request could not be kept");
        }
        Response::from_parts(rparts, Body::from(rbytes))
    });
    task.await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")).into_response())
}

/// Forgets answers older than a day, every hour, until `stop` resolves.
pub async fn run_pruner(store: store::Store, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        match store
            .idempotency_prune(chrono::Utc::now() - chrono::Duration::days(1))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(keys = n, "forgot old Idempotency-Key answers"),
            Err(e) => tracing::warn!(error = %e, "Idempotency-Key answers could not be pruned"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
