//! The OpenAPI 3.1 description of this API, served at `GET /api/v1/openapi.json`. Each
//! operation is the `#[utoipa::path]` on its handler, each response the `ToSchema` of its
//! DTO; this module gathers them, documents the request bodies that handlers read by
//! hand, and adds what every operation shares: the bearer scheme, and errors as
//! `application/problem+json`. A test checks that every route of the router is here.

#![allow(dead_code)] // The body types describe requests; handlers read them by hand.

use axum::Json;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// An error, as `application/problem+json` (RFC 9457).
#[derive(ToSchema)]
pub struct Problem {
    /// `/problems/{slug}`.
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    /// The request field at fault, such as `[1].value` or `communes[0]`.
    field: Option<String>,
    /// Every fault, when there are several.
    errors: Vec<crate::error::FieldError>,
}

/// A duty officer's draft (also the body of a preview).
#[derive(ToSchema)]
pub struct DraftBody {
    /// `flood`, `heavy_rain`, `flash_flood` (Art. 46: flash floods, landslides and land subsidence; `landslide` is read as it), `storm`, `cold`, `heat`, `fog`,
    /// `thunderstorm`, `drought`, `earthquake`.
    hazard: String,
    /// Decision 18/2021 risk level, 1 to 5.
    risk_level: Option<u8>,
    /// `emergency`, `priority` or `normal` (Circular 39/2020); default: emergency from
    /// level 3, else priority.
    class: Option<String>,
    /// Commune codes of the province.
    communes: Vec<String>,
    /// Vietnamese, at most 160 characters.
    headline: String,
    /// Vietnamese, at most 4000 characters.
    description: String,
    instruction: Option<String>,
    /// `Actual` (default), `Exercise` or `Test`.
    status: Option<String>,
    effective: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
    /// Used when `expires` is not given; default 360, at most a week.
    valid_minutes: Option<i64>,
    escalation: Option<EscalationBody>,
    /// English text for the CAP document's second `<info>` (headline and description
    /// together); receivers play the Vietnamese.
    headline_en: Option<String>,
    description_en: Option<String>,
    instruction_en: Option<String>,
    /// `["loudspeaker", "sms"]` (default) or `["loudspeaker"]`: loudspeakers carry every
    /// warning; SMS goes to officials where loudspeakers cannot be confirmed.
    channels: Option<Vec<String>>,
    /// `POST /api/v1/warnings` only: the alert this one updates (it is issued as a CAP
    /// Update referencing every earlier message of the incident).
    updates: Option<String>,
}

/// The compound escalation of Decision 18 Art. 4.
#[derive(ToSchema)]
pub struct EscalationBody {
    /// 1 or 2; the level never goes above 5.
    steps: u8,
    reason: String,
}

/// A pre-warning confirmed: every field optional, replacing the computed draft's.
#[derive(ToSchema)]
pub struct ConfirmBody {
    headline: Option<String>,
    description: Option<String>,
    instruction: Option<String>,
    class: Option<String>,
    communes: Option<Vec<String>>,
    valid_minutes: Option<i64>,
    expires: Option<DateTime<Utc>>,
    escalation: Option<EscalationBody>,
    override_reason: Option<String>,
}

#[derive(ToSchema)]
pub struct SubmitBody {
    /// Issue alone although the two-person rule applies: flagged, and every approver is
    /// told.
    override_reason: Option<String>,
}

#[derive(ToSchema)]
pub struct ApproveBody {
    /// The `version` of the warning the approver read; a changed warning is refused (409).
    version: i64,
    note: Option<String>,
}

#[derive(ToSchema)]
pub struct ReasonBody {
    /// At most 500 characters.
    reason: String,
}

#[derive(ToSchema)]
pub struct LoginBody {
    username: String,
    password: String,
}

/// One reading; the body may also be an array of them, or CSV with these columns.
#[derive(ToSchema)]
pub struct ObservationBody {
    station: String,
    /// `water_level` (m), `rainfall` (mm), `air_temperature` (°C), `visibility` (m),
    /// `wind_beaufort` (Bf, local wind), `discharge` (m3/s), `wind_gust_beaufort` (Bf),
    /// `cyclone_beaufort` (Bf: the intensity of a tropical depression or storm affecting
    /// the station's area, from a storm bulletin or track).
    parameter: String,
    value: f64,
    unit: String,
    observed_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct ReceiverBody {
    receiver_id: String,
    commune: String,
    trusted_keys: Option<Vec<String>>,
    firmware: Option<String>,
    /// Enrolled for drills: Exercise and Test alerts are expected of it (default false).
    drills: Option<bool>,
}

#[derive(ToSchema)]
pub struct SmsPreviewBody {
    text: String,
    /// `ucs2`, `gsm7` or `auto`.
    policy: Option<String>,
    max_ucs2_segments: Option<u32>,
}

/// `post_api_v1_warnings_id_submit` for `POST /api/v1/warnings/{id}/submit`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    format!("{method}_{}", words.join("_"))
}

struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let problem = ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "Problem",
            ))))
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("delete", &mut item.delete),
            ]
            .into_iter()
            .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
            {
                // Handlers of different modules share names (`list`): the id is the
                // method and path, unique by construction.
                op.operation_id = Some(operation_id(method, path));
                for (code, what) in [
                    ("4XX", "Refused: the problem says why, and names the field"),
                    ("5XX", "The server failed; see its log"),
                ] {
                    op.responses.responses.entry(code.to_owned()).or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(what)
                                .content("application/problem+json", problem.clone())
                                .build(),
                        )
                    });
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "canhbao",
        description = "Disaster-warning dissemination for Vietnamese provinces: duty officers' warnings with the two-person rule, CAP 1.2 lifecycle, delivery to commune loudspeakers and by SMS, and monitoring. Every write needs a bearer token of the right role; every POST that can send a warning needs an Idempotency-Key.",
        license(name = "see the repository")
    ),
    paths(
        crate::healthz, crate::readyz, crate::keys, openapi_json,
        crate::login::login, crate::login::logout,
        crate::observations::post_observations,
        crate::alerts::list_alerts, crate::alerts::get_alert_or_cap, crate::alerts::cancel_alert, crate::alerts::release_alert,
        crate::alerts::list_rejections, crate::alerts::list_sources, crate::readings::flagged,
        crate::matrix::deliveries, crate::preview::preview,
        crate::warnings::list, crate::warnings::create, crate::warnings::get, crate::warnings::edit,
        crate::warnings::submit, crate::warnings::approve, crate::warnings::reject,
        crate::warnings::discard, crate::warnings::notifications,
        crate::prewarnings::list, crate::prewarnings::confirm, crate::prewarnings::dismiss,
        crate::events::events,
        crate::fleet::list_receivers, crate::fleet::register_receiver, crate::fleet::remove_receiver,
        crate::fleet::metrics,
        crate::feeds::alerts_atom, crate::feeds::cap,
        crate::audit::list, crate::audit::verify,
        crate::assessments::list_assessments, crate::bulletins::post_bulletin,
        crate::forecasts::list_forecasts, crate::sms::preview, crate::sms::delivery_report,
        crate::contacts::list, crate::contacts::import,
        crate::stations::list, crate::stations::confirm, crate::stations::coverage,
    ),
    components(schemas(Problem)),
    modifiers(&Shared),
    tags(
        (name = "warnings", description = "Duty officers: draft, submit, approve, return, update and cancel"),
        (name = "alerts", description = "Issued alerts, their deliveries and CAP documents"),
        (name = "monitoring", description = "Receivers, feeds, assessments, events and metrics"),
        (name = "ingest", description = "Observations and official bulletins from stations and feeds"),
        (name = "admin", description = "Receivers, contacts and the audit log"),
        (name = "public", description = "No token: health, keys, public feeds, gateway reports"),
    )
)]
pub struct ApiDoc;

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`: this description (public).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "public",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(document()))
}
