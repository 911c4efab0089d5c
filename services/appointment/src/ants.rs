//! The role's HTTP endpoints.
//!
//! * The ANTS editor endpoints the national passport/ID search calls, under
//!   `/api/ants/`, authenticated by the `X-HUB-RDV-AUTH-TOKEN` header:
//!   `getManagedMeetingPoints`, `availableTimeSlots`, `searchApplicationIds`.
//!   Answers come from the same availability computation as gRPC, well
//!   within the aggregator's 15 s timeout (each request is bounded to 10 s).
//! * Desk agenda feeds, `GET /agenda/<desk>.ics`, for calendar clients: they
//!   cannot send headers, so the address carries the desk's feed key
//!   (`?key=`, given by `ExportDeskAgenda`), never a person's token; an
//!   agent's token is accepted as a bearer header.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use chrono::{Duration, NaiveDate};
use guichet_platform::calendar::{from_paris, paris_offset};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use guichet_platform::auth::{Authenticator, Role};

use crate::core::{BOOKED, CHECKED_IN, Core, ListFilter, NO_SHOW, SEEN, parse_application_id};

pub const AUTH_HEADER: &str = "x-hub-rdv-auth-token";

#[derive(Clone)]
struct Ants {
    core: Core,
    token: Arc<String>,
    auth: Arc<Authenticator>,
}

pub fn router(core: Core, auth: Arc<Authenticator>) -> Router {
    let token = Arc::new(core.config.ants.auth_token.expose_secret().to_owned());
    let mut r = Router::new();
    if !token.is_empty() {
        r = r
            .route("/api/ants/getManagedMeetingPoints", get(meeting_points))
            .route("/api/ants/availableTimeSlots", get(time_slots))
            .route("/api/ants/searchApplicationIds", get(search_applications));
    }
    r.route("/agenda/{file}", get(agenda))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Ants { core, token, auth })
}

/// A desk's agenda (a week back, three months ahead) as iCalendar.
async fn agenda(
    State(s): State<Ants>,
    Path(file): Path<String>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let p = params(q);
    if p.contains_key("token") {
        // A person's 12-hour token in an address ends up in calendar
        // settings, proxies' logs and history: refused.
        return error(
            StatusCode::BAD_REQUEST,
            "le jeton d'un agent ne se met pas dans l'adresse : abonnez-vous avec l'adresse de l'agenda (ExportDeskAgenda, feed_path), qui porte sa clé",
        );
    }
    let Some(desk_id) = file.strip_suffix(".ics") else {
        return error(StatusCode::NOT_FOUND, "agenda inconnu");
    };
    let Some(desk) = s.core.model.desk(desk_id).cloned() else {
        return error(StatusCode::NOT_FOUND, "agenda inconnu");
    };
    let bearer = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let key = p.get("key").and_then(|v| v.first()).cloned();
    match (bearer, key) {
        (Some(token), _) => {
            let principal = match s.auth.verify(&token) {
                Ok(p) => p,
                Err(_) => return error(StatusCode::UNAUTHORIZED, "jeton invalide"),
            };
            if !principal.has(Role::Agent) {
                return error(StatusCode::FORBIDDEN, "réservé aux agents");
            }
        }
        (None, Some(key)) => {
            let expected = s.auth.derived_secret(crate::grpc::AGENDA_FEED, &desk.id);
            if !guichet_platform::secret::constant_time_eq(key.as_bytes(), expected.as_bytes()) {
                return error(StatusCode::FORBIDDEN, "clé d'agenda invalide");
            }
        }
        (None, None) => return error(StatusCode::UNAUTHORIZED, "clé d'agenda manquante"),
    }
    let now = s.core.now();
    let filter = ListFilter {
        desk: desk.id.clone(),
        statuses: vec![BOOKED, CHECKED_IN, SEEN, NO_SHOW],
        start: Some(now - Duration::days(7)),
        end: Some(now + Duration::days(90)),
        ..Default::default()
    };
    match s.core.list(&filter, 5000, None).await {
        Ok(rows) => (
            // Citizens' names and appointments: never kept by a cache, and
            // the URL (which may carry the token) never sent on as a referrer.
            [
                (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            s.core.agenda_ics(&desk.name, &rows),
        )
            .into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "réessayez plus tard"),
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

fn authorized(s: &Ants, h: &HeaderMap) -> Result<(), Box<Response>> {
    let given = h
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ok = guichet_platform::secret::constant_time_eq(given.as_bytes(), s.token.as_bytes());
    if ok && !s.token.is_empty() {
        Ok(())
    } else {
        metrics::counter!("guichet_appointment_ants_unauthorized_total").increment(1);
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "X-HUB-RDV-AUTH-TOKEN manquant ou invalide",
        )))
    }
}

/// `a=1&a=2&b[]=3` → {a: [1, 2], b: [3]} (repeated keys, as the ANTS sends them).
fn params(raw: Option<String>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k);
        let k = k.trim_end_matches("[]").to_owned();
        out.entry(k).or_default().push(decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sites with a desk that serves a passport/ID type.
fn ants_sites(core: &Core) -> Vec<&crate::config::SiteConfig> {
    core.model
        .sites
        .iter()
        .filter(|s| {
            core.model.types.iter().any(|t| {
                !t.ants_reason.is_empty() && core.model.desks_for(&s.id, t).next().is_some()
            })
        })
        .collect()
}

async fn meeting_points(State(s): State<Ants>, h: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &h) {
        return *r;
    }
    let points: Vec<Value> = ants_sites(&s.core)
        .into_iter()
        .map(|site| {
            json!({
                "id": site.id,
                "name": site.name,
                "longitude": site.longitude,
                "latitude": site.latitude,
                "public_entry_address": site.address,
                "zip_code": site.zip_code,
                "city_name": site.city,
                "website": site.website,
                "city_logo": s.core.config.ants.city_logo,
            })
        })
        .collect();
    Json(points).into_response()
}

async fn time_slots(State(s): State<Ants>, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = authorized(&s, &h) {
        return *r;
    }
    let p = params(q);
    let one = |k: &str| {
        p.get(k)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    let date = |k: &str| NaiveDate::parse_from_str(&one(k), "%Y-%m-%d").ok();
    let (Some(start), Some(end)) = (date("start_date"), date("end_date")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "start_date et end_date (AAAA-MM-JJ) sont requis",
        );
    };
    if end < start || end - start > Duration::days(366) {
        return error(StatusCode::BAD_REQUEST, "période invalide");
    }
    let reason = one("reason");
    let reason = if reason.is_empty() {
        "CNI-PASSPORT".to_owned()
    } else {
        reason
    };
    let Some(t) = s
        .core
        .model
        .types
        .iter()
        .find(|t| t.ants_reason == reason && t.public)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "reason doit valoir CNI, PASSPORT ou CNI-PASSPORT",
        );
    };
    let people: u32 = one("documents_number")
        .parse()
        .unwrap_or(1)
        .clamp(1, t.max_people);
    let ids = p.get("meeting_point_ids").cloned().unwrap_or_default();
    let from = from_paris(start.and_hms_opt(0, 0, 0).unwrap_or_default());
    let to = from_paris(
        (end + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default(),
    );
    let mut out = serde_json::Map::new();
    for id in ids.iter().filter(|id| s.core.model.site(id).is_some()) {
        let slots = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            s.core.availability(
                &t.id,
                std::slice::from_ref(id),
                people,
                from,
                to,
                5000,
                true,
                false,
            ),
        )
        .await;
        let slots = match slots {
            Ok(Ok(v)) => v,
            Ok(Err(_)) | Err(_) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, "réessayez plus tard");
            }
        };
        let base = s
            .core
            .config
            .public_base_url
            .trim_end_matches('/')
            .to_owned();
        let list: Vec<Value> = slots
            .into_iter()
            .map(|sl| {
                let local = sl.start.with_timezone(&paris_offset(sl.start));
                json!({
                    "datetime": local.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                    "callback_url": format!(
                        "{base}/rendez-vous/nouveau?type={}&site={}&debut={}&personnes={people}",
                        t.id, sl.site, sl.start.format("%Y-%m-%dT%H:%M:%SZ")
                    ),
                })
            })
            .collect();
        out.insert(id.clone(), Value::Array(list));
    }
    Json(Value::Object(out)).into_response()
}

async fn search_applications(
    State(s): State<Ants>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(r) = authorized(&s, &h) {
        return *r;
    }
    let p = params(q);
    let mut out = serde_json::Map::new();
    for raw in p.get("application_ids").cloned().unwrap_or_default() {
        let Some(app) = parse_application_id(&raw) else {
            return error(
                StatusCode::BAD_REQUEST,
                "un numéro de pré-demande compte 10 lettres ou chiffres",
            );
        };
        let bookings = match s.core.bookings_for_application(&app).await {
            Ok(b) => b,
            Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "réessayez plus tard"),
        };
        let list: Vec<Value> = bookings
            .iter()
            .map(|b| {
                let site = s
                    .core
                    .model
                    .site(&b.site_id)
                    .map(|x| x.name.clone())
                    .unwrap_or_default();
                let url = s.core.manage_url(b);
                let local = b.start_at.with_timezone(&paris_offset(b.start_at));
                json!({
                    "meeting_point": site,
                    "datetime": local.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                    "management_url": url,
                    "cancel_url": format!("{url}&action=annuler"),
                })
            })
            .collect();
        out.insert(app, Value::Array(list));
    }
    Json(Value::Object(out)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_bracketed_keys_collect() {
        let p = params(Some(
            "meeting_point_ids=a&meeting_point_ids%5B%5D=b&start_date=2026-12-01&x=%C3%A9+y".into(),
        ));
        assert_eq!(p["meeting_point_ids"], vec!["a", "b"]);
        assert_eq!(p["x"], vec!["é y"]);
    }
}
