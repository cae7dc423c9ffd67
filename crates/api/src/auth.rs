//! Bearer-token authentication. Tokens are stored as SHA-256 hashes; the secret itself is
//! never stored or logged.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Users, receivers, contacts, keys and sources; everything an officer may do.
    Admin,
    /// Duty officers: draft, submit, update and cancel warnings.
    Officer,
    /// Approve warnings (never their own submission).
    Approver,
    /// A station or feed: may write observations and read.
    Station,
    /// Operators: read only.
    Viewer,
}

impl Role {
    /// The roles a person can have (a station is a machine key).
    pub const PEOPLE: [Role; 4] = [Role::Viewer, Role::Officer, Role::Approver, Role::Admin];

    pub fn code(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Officer => "officer",
            Self::Approver => "approver",
            Self::Station => "station",
            Self::Viewer => "viewer",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            Self::Admin,
            Self::Officer,
            Self::Approver,
            Self::Station,
            Self::Viewer,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

/// What an API key may do. People's logins are not scoped: their role decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `POST /api/v1/observations` (for its stations, if it names any).
    Observations,
    /// `POST /api/v1/bulletins`: official CAP bulletins, whose levels override computed
    /// ones. Never a default: a gauge's key cannot post one.
    Bulletins,
    /// Every `GET`.
    Read,
}

impl Scope {
    pub fn code(self) -> &'static str {
        match self {
            Self::Observations => "observations",
            Self::Bulletins => "bulletins",
            Self::Read => "read",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Observations, Self::Bulletins, Self::Read]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

/// The hex SHA-256 of a token secret, as stored.
pub fn token_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub label: String,
    pub role: Role,
    /// For a station token, the stations it may write for; `None`: any.
    pub stations: Option<Vec<String>>,
    /// The person behind a login's token; `None` for an API key.
    pub user_id: Option<i64>,
    /// For an API key, what it may do (explicit, or its role's default); `None` for a
    /// person, whose role decides.
    pub scopes: Option<Vec<Scope>>,
}

impl Caller {
    /// Fails with 403 unless the caller (an API key) has `scope`; people always pass.
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        match &self.scopes {
            Some(scopes) if !scopes.contains(&scope) => Err(ApiError::forbidden(format!(
                "this key may not {} (its scopes: {})",
                match scope {
                    Scope::Observations => "write observations",
                    Scope::Bulletins => "post bulletins",
                    Scope::Read => "read",
                },
                scopes.iter().map(|s| s.code()).collect::<Vec<_>>().join(", ")
            ))),
            _ => Ok(()),
        }
    }
    /// Fails with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], action: &str) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {:?} may not {action}",
                self.role.code()
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("no Authorization header; send 'Authorization: Bearer <token>'")
        })?;
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header is not 'Bearer <token>'"))?;
        let caller = caller_from_secret(state, secret).await?;
        if parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD {
            caller.require_scope(Scope::Read)?;
        }
        Ok(caller)
    }
}

/// The caller a token's secret stands for (a bearer header, or the console's session
/// cookie, which holds the same kind of token): unknown, expired and revoked tokens are
/// refused alike.
pub(crate) async fn caller_from_secret(state: &AppState, secret: &str) -> Result<Caller, ApiError> {
    let record = state
        .store
        .find_token(&token_hash(secret), chrono::Utc::now())
        .await?
        .ok_or_else(|| ApiError::unauthorized("the token is unknown, expired or revoked"))?;
    let role = Role::from_code(&record.role).ok_or_else(|| {
        ApiError::internal(format!("token {} has unknown role {:?}", record.id, record.role))
    })?;
    let scopes = match (record.user_id, &record.scopes) {
        (Some(_), _) => None,
        (None, Some(list)) => Some(list.iter().filter_map(|s| Scope::from_code(s)).collect()),
        (None, None) => Some(match role {
            Role::Station => vec![Scope::Observations, Scope::Read],
            Role::Viewer => vec![Scope::Read],
            _ => vec![Scope::Observations, Scope::Bulletins, Scope::Read],
        }),
    };
    let caller = Caller {
        label: record.label,
        role,
        stations: record.stations,
        user_id: record.user_id,
        scopes,
    };
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_hex_sha256() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
