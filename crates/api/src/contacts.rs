//! The SMS contact directory for admins: `POST /api/v1/contacts/import` (a CSV file, whole
//! or not at all, every bad row named) and `GET /api/v1/contacts?commune=`. Contacts are
//! personal data: admins only, both ways.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, Q, require_media};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportedDto {
    pub imported: usize,
    pub added: usize,
    pub updated: usize,
}

#[utoipa::path(post, path = "/api/v1/contacts/import", tag = "admin", security(("bearer" = [])), request_body(content = String, description = "CSV, whole or not at all", content_type = "text/csv"), responses((status = 200, description = "Imported", body = ImportedDto)))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImportedDto>, ApiError> {
    caller.require(&[Role::Admin], "import contacts")?;
    require_media(&headers, &["text/csv"])?;
    let text =
        std::str::from_utf8(&body).map_err(|e| ApiError::bad_request("body", format!("not UTF-8: {e}")))?;
    let contacts = ingest::contacts::parse_csv(text, &state.communes).map_err(|errors| {
        ApiError::unprocessable(
            "body",
            format!("{} rows are refused; nothing was imported", errors.len()),
        )
        .with_errors(crate::observations::row_errors(errors))
    })?;
    let done = ingest::directory::import_contacts(&state.store, &contacts, Utc::now(), |_, _| {}).await?;
    tracing::info!(by = %caller.label, imported = contacts.len(), added = done.added, "contacts imported");
    crate::audit::record(
        &state,
        &caller.label,
        "contacts.import",
        "directory",
        serde_json::json!({"imported": contacts.len(), "added": done.added, "updated": done.updated}),
    )
    .await;
    Ok(Json(ImportedDto {
        imported: contacts.len(),
        added: done.added,
        updated: done.updated,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ContactsQuery {
    pub commune: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactDto {
    pub phone: String,
    pub name: String,
    pub commune: String,
    pub role: String,
    pub language: String,
    pub opted_out: bool,
    pub updated: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/v1/contacts", tag = "admin", security(("bearer" = [])), params(ContactsQuery), responses((status = 200, description = "The SMS directory", body = [ContactDto])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Q(q): Q<ContactsQuery>,
) -> Result<Json<Vec<ContactDto>>, ApiError> {
    caller.require(&[Role::Admin], "read the contact directory")?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let rows = state.store.list_contacts(q.commune.as_deref(), limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|c| ContactDto {
                phone: c.phone,
                name: c.name,
                commune: c.commune,
                role: c.role,
                language: c.language,
                opted_out: c.opted_out,
                updated: c.updated,
            })
            .collect(),
    ))
}
