//! Nouvelle demande: a request taken by hand (a caller on a desk phone, a
//! visitor at a desk without a ticket). It goes through the same intake
//! path as every channel (an IntakeEvent on JetStream, acknowledged before
//! the page says it is recorded), so it is routed, traced and counted like
//! the others. The form's one-time id is the event's id: sending the form
//! twice records one request.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use guichet_platform::contact::{Email, Phone, clean_name};
use guichet_proto::intake::v1 as ipb;
use serde::Deserialize;

use super::{Layout, respond};
use crate::web::{self, Agent, App};

#[derive(Default, Deserialize)]
pub struct Values {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub jeton: String,
    #[serde(default)]
    pub canal: String,
    #[serde(default)]
    pub prenom: String,
    #[serde(default)]
    pub nom: String,
    #[serde(default)]
    pub telephone: String,
    #[serde(default)]
    pub courriel: String,
    #[serde(default)]
    pub objet: String,
    #[serde(default)]
    pub texte: String,
}

/// A field's error, shown beside it.
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

#[derive(askama::Template)]
#[template(path = "intake.html")]
struct IntakePage {
    layout: Layout,
    v: Values,
    errors: Vec<FieldError>,
}

impl IntakePage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

#[derive(Deserialize, Default)]
pub struct FromCall {
    /// A popped call: its caller's number and name fill the form.
    #[serde(default)]
    appel: String,
}

pub async fn form(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Query(from): Query<FromCall>,
) -> Response {
    let mut v = Values {
        jeton: uuid::Uuid::now_v7().to_string(),
        canal: "telephony".into(),
        ..Default::default()
    };
    if !from.appel.trim().is_empty() {
        let mut t = app.clients.telephony.clone();
        if let Ok(call) = t
            .get_call(app.clients.request(
                &agent,
                guichet_proto::telephony::v1::GetCallRequest {
                    call_id: from.appel.trim().to_owned(),
                },
            ))
            .await
        {
            let call = call.into_inner();
            v.telephone = call.caller_phone;
            let name = guichet_platform::names::split_name(&call.caller_name);
            v.prenom = name.given;
            v.nom = name.family;
            v.objet = "Appel reçu".into();
        }
    }
    respond(
        &app,
        &IntakePage {
            layout: Layout::new(&app, &agent, "nouvelle", &headers),
            v,
            errors: Vec::new(),
        },
    )
}

fn check(v: &Values) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut err = |field, message: &str| {
        errors.push(FieldError {
            field,
            message: message.to_owned(),
        })
    };
    if !matches!(v.canal.as_str(), "telephony" | "counter") {
        err("canal", "Choisissez : appel reçu ou visite.");
    }
    if clean_name(&v.prenom).is_err() {
        err("prenom", "Ce prénom contient des caractères non admis.");
    }
    if clean_name(&v.nom).is_err() {
        err("nom", "Ce nom contient des caractères non admis.");
    }
    if !v.telephone.trim().is_empty() && Phone::parse(&v.telephone).is_err() {
        err(
            "telephone",
            "Numéro de téléphone invalide (exemple : 06 12 34 56 78).",
        );
    }
    if !v.courriel.trim().is_empty() && Email::parse(&v.courriel).is_err() {
        err(
            "courriel",
            "Adresse de courriel invalide (exemple : nom@exemple.fr).",
        );
    }
    if v.objet.trim().is_empty() && v.texte.trim().is_empty() {
        err("objet", "Indiquez l'objet de la demande.");
    }
    if v.objet.chars().count() > 200 {
        err("objet", "200 caractères au plus.");
    }
    if v.texte.chars().count() > 10_000 {
        err("texte", "10 000 caractères au plus.");
    }
    errors
}

pub async fn submit(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(mut v): Form<Values>,
) -> Response {
    if let Err(r) = web::check_csrf(&agent, &v.csrf) {
        return r;
    }
    if uuid::Uuid::parse_str(&v.jeton).is_err() {
        v.jeton = uuid::Uuid::now_v7().to_string();
    }
    let errors = check(&v);
    if !errors.is_empty() {
        let p = IntakePage {
            layout: Layout::new(&app, &agent, "nouvelle", &headers),
            v,
            errors,
        };
        return (StatusCode::UNPROCESSABLE_ENTITY, respond(&app, &p)).into_response();
    }
    let telephony = v.canal == "telephony";
    let now = app.now();
    let event = ipb::IntakeEvent {
        id: v.jeton.clone(),
        channel: if telephony {
            ipb::Channel::Telephony
        } else {
            ipb::Channel::Counter
        } as i32,
        received_at: Some(guichet_proto::convert::timestamp(now)),
        citizen: Some(ipb::CitizenHint {
            given_name: v.prenom.trim().to_owned(),
            family_name: v.nom.trim().to_owned(),
            phones: Some(v.telephone.trim().to_owned())
                .filter(|p| !p.is_empty())
                .into_iter()
                .collect(),
            emails: Some(v.courriel.trim().to_owned())
                .filter(|p| !p.is_empty())
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        subject: v.objet.trim().to_owned(),
        body: v.texte.trim().to_owned(),
        // No channel details: this is not a call the PBX measured nor a
        // ticket of the waiting room, but a request to route and work like
        // any other (an answered call would be recorded as done).
        details: None,
        ..Default::default()
    };
    let staged = guichet_platform::outbox::Outbox::new(app.db.clone(), app.bus.clone())
        .intake_event(&event, format!("portal-requests/{}", v.jeton), now);
    match app.bus.publish(staged.nats_subject, &staged.event).await {
        Ok(()) => {
            tracing::info!(intake_event_id = %event.id, agent = %agent.subject, "request taken by hand");
            metrics::counter!("guichet_portal_requests_total", "channel" => if telephony { "telephony" } else { "counter" }).increment(1);
            web::redirect_with(
                "/file",
                "Demande enregistrée : elle entre dans la file unique et l'historique du citoyen.",
                app.config.secure_cookies,
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot publish a request taken by hand");
            let p = IntakePage {
                layout: Layout::new(&app, &agent, "nouvelle", &headers),
                v,
                errors: vec![FieldError {
                    field: "objet",
                    message: "La demande n'a pas pu être enregistrée (file d'attente indisponible). Rien n'est perdu : renvoyez le formulaire dans un instant.".into(),
                }],
            };
            (StatusCode::SERVICE_UNAVAILABLE, respond(&app, &p)).into_response()
        }
    }
}
