//! State actions: what entering a state does (`[[states.actions]]` of a
//! process definition), carried out through the role that owns each one.
//!
//! Entering a state (a transition, a timer, a reopening, or the opening of
//! a dossier in its initial state) writes one durable job per action in the
//! transaction of the state change. A transition replayed with the same
//! request id returns the first one and writes nothing, so an action runs
//! once per state entry. The job runs after the commit, is retried with
//! backoff while it fails (the agent sees the error in `GetGuidance`) and
//! records its outcome on the dossier's timeline:
//!
//! * `send_message`: a notification request (template, the citizen's
//!   preferred phone or email) staged in the outbox to `guichet.notify.dossier`;
//! * `request_signature`: a signature request to the signature role for the
//!   dossier's document, the citizen as signer, codes sent at once (the SMS
//!   carries the signing page link);
//! * `book_appointment`: the appointment role's next free slots of the
//!   type, recorded as a task for the agent (the citizen chooses with them).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use guichet_platform::auth::ServiceCredentials;
use guichet_platform::jobs::{self, Job, NewJob};
use guichet_platform::retry::Failure;
use guichet_proto::appointment::v1 as apb;
use guichet_proto::appointment::v1::appointment_service_client::AppointmentServiceClient;
use guichet_proto::notification::v1::{NotificationRequest, notification_request};
use guichet_proto::signature::v1 as spb;
use guichet_proto::signature::v1::signature_service_client::SignatureServiceClient;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::catalog::ProcessDefinition;
use crate::db::entities::{citizen, contact, document, dossier};
use crate::store::{NewEntry, Store, insert_entry};

/// The durable job kind of a state action.
pub const JOB_KIND: &str = "state_action";

/// One action of one state entry, as written in the job's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub dossier_id: String,
    pub state: String,
    /// The dossier's revision once in the state: one per state entry.
    pub revision: i64,
    /// The action's index in the state's `actions`.
    pub index: usize,
    pub kind: String,
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub appointment_type: String,
    #[serde(default)]
    pub document: String,
}

impl Planned {
    /// Idempotency key of this action in the other roles (the notification
    /// id, the signature request id) and on the timeline.
    pub fn key(&self) -> String {
        format!(
            "action-{}-{}-{}",
            self.dossier_id, self.revision, self.index
        )
    }
}

/// Where a planned action stands, for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRun {
    pub planned: Planned,
    /// `pending`, `retrying`, `done` or `failed` (given up).
    pub status: &'static str,
    pub attempts: u32,
    /// The last failure, in words an agent reads.
    pub error: String,
}

pub type SignatureClient = SignatureServiceClient<InterceptedService<Channel, ServiceCredentials>>;
pub type AppointmentClient =
    AppointmentServiceClient<InterceptedService<Channel, ServiceCredentials>>;

impl Store {
    /// Write the jobs of `state`'s actions for the entry at `revision`.
    pub(crate) async fn plan_actions(
        &self,
        conn: &impl ConnectionTrait,
        dossier_id: &str,
        def: &ProcessDefinition,
        state: &str,
        revision: i64,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let Some(s) = def.state(state) else {
            return Ok(());
        };
        for (index, a) in s.actions.iter().enumerate() {
            let planned = Planned {
                dossier_id: dossier_id.to_owned(),
                state: state.to_owned(),
                revision,
                index,
                kind: a.kind.clone(),
                template: a.template.clone().unwrap_or_default(),
                appointment_type: a.appointment_type.clone().unwrap_or_default(),
                document: a.document.clone().unwrap_or_default(),
            };
            let payload = serde_json::to_string(&planned)
                .map_err(|e| DbErr::Custom(format!("state action payload: {e}")))?;
            jobs::add(
                conn,
                NewJob {
                    kind: JOB_KIND,
                    subject: dossier_id,
                    payload,
                    run_at: now,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The actions planned for the dossier's latest entry into `state`,
    /// with where each stands.
    pub async fn action_runs(
        &self,
        dossier_id: &str,
        state: &str,
    ) -> Result<Vec<ActionRun>, DbErr> {
        use guichet_platform::jobs::entity::{Column, Entity};
        let rows = Entity::find()
            .filter(Column::Subject.eq(dossier_id))
            .filter(Column::Kind.eq(JOB_KIND))
            .order_by_asc(Column::Id)
            .all(self.db())
            .await?;
        let mut runs: Vec<ActionRun> = rows
            .into_iter()
            .filter_map(|j| {
                let planned: Planned = serde_json::from_str(&j.payload).ok()?;
                (planned.state == state).then(|| ActionRun {
                    planned,
                    status: match (j.done, j.last_error.is_some(), j.attempts) {
                        (true, false, _) => "done",
                        (true, true, _) => "failed",
                        (false, _, 0) => "pending",
                        (false, _, _) => "retrying",
                    },
                    attempts: j.attempts.max(0) as u32,
                    error: j.last_error.unwrap_or_default(),
                })
            })
            .collect();
        let latest = runs.iter().map(|r| r.planned.revision).max();
        runs.retain(|r| Some(r.planned.revision) == latest);
        runs.sort_by_key(|r| r.planned.index);
        Ok(runs)
    }
}

/// Carries out due state actions through the owning roles.
#[derive(Clone)]
pub struct ActionRunner {
    store: Store,
    runner: jobs::Runner,
    signature: Option<SignatureClient>,
    appointment: Option<AppointmentClient>,
}

/// The citizen an action is for: name and where to reach them.
struct Recipient {
    citizen: citizen::Model,
    phone: Option<String>,
    email: Option<String>,
}

impl ActionRunner {
    pub fn new(
        store: Store,
        policy: jobs::Policy,
        signature: Option<SignatureClient>,
        appointment: Option<AppointmentClient>,
    ) -> ActionRunner {
        let runner = jobs::Runner::new(store.db().clone(), "dossier", policy);
        ActionRunner {
            store,
            runner,
            signature,
            appointment,
        }
    }

    /// Run the actions due now; returns how many succeeded.
    pub async fn run_due(&self) -> Result<usize, DbErr> {
        let now = self.store.now();
        let max_attempts = self.runner.policy().max_attempts;
        self.runner
            .run_due(now, |job| async move {
                let res = self.run(&job).await;
                // Given up (refused for good, or out of attempts): the agent
                // takes over, told on the timeline.
                let last = usize::try_from(job.attempts).unwrap_or(0) + 1 >= max_attempts;
                if let Err(e) = &res
                    && (last || !guichet_platform::retry::Classify::is_transient(e))
                    && let Ok(p) = serde_json::from_str::<Planned>(&job.payload)
                    && let Err(db) = self.record_failure(&p, &e.message).await
                {
                    tracing::warn!(job_id = %job.id, error = %db, "state action failure not recorded");
                }
                res
            })
            .await
    }

    async fn run(&self, job: &Job) -> Result<(), Failure> {
        if job.kind != JOB_KIND {
            return Ok(());
        }
        let p: Planned = serde_json::from_str(&job.payload)
            .map_err(|e| Failure::permanent(format!("payload illisible : {e}")))?;
        let d = dossier::Entity::find_by_id(p.dossier_id.clone())
            .one(self.store.db())
            .await
            .map_err(Failure::transient)?;
        let Some(d) = d else {
            // Purged meanwhile: nothing left to act for.
            return Ok(());
        };
        let result = match p.kind.as_str() {
            "send_message" => self.send_message(&p, &d).await,
            "request_signature" => self.request_signature(&p, &d).await,
            "book_appointment" => self.propose_appointment(&p, &d).await,
            other => Err(Failure::permanent(format!("action inconnue « {other} »"))),
        };
        match &result {
            Ok(()) => {
                metrics::counter!("guichet_dossier_state_actions_total", "kind" => p.kind.clone(), "result" => "done").increment(1);
                tracing::info!(dossier_id = %p.dossier_id, kind = %p.kind, state = %p.state, "state action done");
            }
            Err(e) => {
                metrics::counter!("guichet_dossier_state_actions_total", "kind" => p.kind.clone(), "result" => "failed").increment(1);
                tracing::warn!(dossier_id = %p.dossier_id, kind = %p.kind, state = %p.state, error = %e, "state action failed");
            }
        }
        result
    }

    async fn recipient(&self, citizen_id: &str) -> Result<Recipient, Failure> {
        let mut id = citizen_id.to_owned();
        for _ in 0..5 {
            let c = citizen::Entity::find_by_id(id.clone())
                .one(self.store.db())
                .await
                .map_err(Failure::transient)?
                .ok_or_else(|| Failure::permanent("l'usager du dossier est introuvable"))?;
            if let Some(next) = c.merged_into.clone().filter(|m| !m.is_empty()) {
                id = next;
                continue;
            }
            let contacts = contact::Entity::find()
                .filter(contact::Column::CitizenId.eq(c.id.clone()))
                .order_by_asc(contact::Column::Id)
                .all(self.store.db())
                .await
                .map_err(Failure::transient)?;
            let first = |kind: &str| {
                contacts
                    .iter()
                    .find(|x| x.kind == kind)
                    .map(|x| x.value.clone())
            };
            return Ok(Recipient {
                phone: first("phone"),
                email: first("email"),
                citizen: c,
            });
        }
        Err(Failure::permanent(
            "chaîne de fusions de l'usager trop longue",
        ))
    }

    fn variables(
        &self,
        d: &dossier::Model,
        def: Option<&ProcessDefinition>,
        c: &citizen::Model,
    ) -> HashMap<String, String> {
        let name = format!("{} {}", c.given_name.trim(), c.family_name.trim());
        let name = name.trim();
        let salutation = if name.is_empty() {
            "Bonjour".to_owned()
        } else {
            format!("Bonjour {name}")
        };
        let process = def.map(|p| p.title.clone()).unwrap_or_default();
        let state = def
            .and_then(|p| p.state(&d.state))
            .map(|s| s.title.clone())
            .unwrap_or_default();
        [
            ("reference", d.reference.clone()),
            ("process", process),
            ("process_id", d.process_id.clone()),
            ("state", state),
            ("salutation", salutation),
            ("given_name", c.given_name.clone()),
            ("family_name", c.family_name.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A timeline entry for the action, idempotent on its key.
    async fn record(
        &self,
        conn: &impl ConnectionTrait,
        p: &Planned,
        d: &dossier::Model,
        kind: &str,
        summary: String,
        source: String,
    ) -> Result<(), DbErr> {
        let exists = crate::db::entities::timeline::Entity::find()
            .filter(crate::db::entities::timeline::Column::SourceEventId.eq(source.clone()))
            .one(conn)
            .await?
            .is_some();
        if exists {
            return Ok(());
        }
        insert_entry(
            conn,
            NewEntry {
                citizen_id: d.citizen_id.clone(),
                dossier_id: Some(p.dossier_id.clone()),
                kind: kind.to_owned(),
                channel: "unspecified".into(),
                occurred_at: self.store.now(),
                summary,
                actor: "system".into(),
                source_event_id: Some(source),
            },
            "",
        )
        .await?;
        Ok(())
    }

    async fn record_failure(&self, p: &Planned, why: &str) -> Result<(), DbErr> {
        let Some(d) = dossier::Entity::find_by_id(p.dossier_id.clone())
            .one(self.store.db())
            .await?
        else {
            return Ok(());
        };
        let def = self
            .store
            .catalog()
            .get(&d.process_id, d.process_version as u32)
            .cloned();
        let what = def
            .as_ref()
            .and_then(|def| {
                def.state(&p.state)
                    .and_then(|s| s.actions.get(p.index))
                    .map(|a| a.describe(def))
            })
            .unwrap_or_else(|| p.kind.clone());
        self.record(
            self.store.db(),
            p,
            &d,
            "task",
            format!(
                "Action automatique non réalisée : {what}. Motif : {why}. À faire par l'agent."
            ),
            format!("action-failed:{}", p.key()),
        )
        .await
    }

    async fn send_message(&self, p: &Planned, d: &dossier::Model) -> Result<(), Failure> {
        let r = self.recipient(&d.citizen_id).await?;
        let prefers_email = r.citizen.preferred_channel == "email";
        let target = match (prefers_email, &r.phone, &r.email) {
            (true, _, Some(e)) => notification_request::Target::Email(e.clone()),
            (_, Some(ph), _) => notification_request::Target::Phone(ph.clone()),
            (_, None, Some(e)) => notification_request::Target::Email(e.clone()),
            (_, None, None) => {
                return Err(Failure::permanent(
                    "l'usager n'a ni numéro de téléphone ni adresse électronique",
                ));
            }
        };
        let channel = match &target {
            notification_request::Target::Phone(_) => "SMS",
            notification_request::Target::Email(_) => "courriel",
        };
        let catalog = self.store.catalog();
        let def = catalog.get(&d.process_id, d.process_version as u32);
        let key = p.key();
        let mut variables = self.variables(d, def, &r.citizen);
        // The code of "Suivre ma demande", for templates that give it.
        let follow_code = crate::follow::Follow::new(self.store.db().clone())
            .code(&d.id)
            .await
            .map_err(|e| Failure::transient(format!("follow code: {e}")))?;
        variables.insert("follow_code".to_owned(), follow_code);
        let req = NotificationRequest {
            id: key.clone(),
            target: Some(target),
            template: p.template.clone(),
            variables,
            dossier_id: d.id.clone(),
            auto_submitted: "auto-generated".into(),
            reference: d.reference.clone(),
            requested_by: "dossier".into(),
            ..Default::default()
        };
        let staged = self.store.outbox().notification_request(
            "dossier",
            &req,
            format!("dossiers/{}", d.id),
            self.store.now(),
        );
        let txn = self.store.db().begin().await.map_err(Failure::transient)?;
        self.store
            .outbox()
            .stage(&txn, &staged)
            .await
            .map_err(Failure::transient)?;
        self.record(
            &txn,
            p,
            d,
            "message_sent",
            format!(
                "Message automatique envoyé à l'usager par {channel} (modèle « {} »)",
                p.template
            ),
            format!("action:{key}"),
        )
        .await
        .map_err(Failure::transient)?;
        txn.commit().await.map_err(Failure::transient)?;
        self.store.outbox().notify();
        Ok(())
    }

    async fn request_signature(&self, p: &Planned, d: &dossier::Model) -> Result<(), Failure> {
        let Some(client) = self.signature.clone() else {
            // Retried: the role may be configured and the process restarted.
            return Err(Failure::transient(
                "le service de signature n'est pas configuré (dossier.signature_url)",
            ));
        };
        let catalog = self.store.catalog();
        let def = catalog.get(&d.process_id, d.process_version as u32);
        let doc_def = def.and_then(|def| def.document(&p.document));
        let docs = document::Entity::find()
            .filter(document::Column::DossierId.eq(d.id.clone()))
            .filter(document::Column::MediaType.eq("application/pdf"))
            .order_by_desc(document::Column::CreatedAt)
            .order_by_desc(document::Column::Id)
            .all(self.store.db())
            .await
            .map_err(Failure::transient)?;
        let doc = if p.document.is_empty() {
            docs.first()
        } else {
            docs.iter().find(|x| x.document_type == p.document)
        };
        let Some(doc) = doc else {
            // The agent may still attach it: retried until then.
            let what = doc_def
                .map(|x| format!("la pièce « {} »", x.title))
                .unwrap_or_else(|| "un document PDF".into());
            return Err(Failure::transient(format!(
                "document à signer absent : joignez {what} au dossier"
            )));
        };
        let r = self.recipient(&d.citizen_id).await?;
        let Some(phone) = r.phone.clone() else {
            return Err(Failure::permanent(
                "l'usager n'a pas de numéro de téléphone mobile pour recevoir le code",
            ));
        };
        let name = format!(
            "{} {}",
            r.citizen.given_name.trim(),
            r.citizen.family_name.trim()
        )
        .trim()
        .to_owned();
        let title = doc_def
            .map(|x| short_title(&x.title))
            .unwrap_or_else(|| doc.filename.clone());
        let key = p.key();
        let mut client = client;
        let created = client
            .create_signature_request(spb::CreateSignatureRequestRequest {
                dossier_id: d.id.clone(),
                document_sha256: doc.sha256.clone(),
                title: title.clone(),
                process_template: p.template.clone(),
                signers: vec![spb::Signer {
                    name,
                    phone,
                    ..Default::default()
                }],
                request_id: key.clone(),
                send_codes: true,
                ..Default::default()
            })
            .await
            .map_err(|s| {
                Failure::of(tonic::Status::new(
                    s.code(),
                    format!("service de signature : {}", s.message()),
                ))
            })?
            .into_inner();
        tracing::info!(dossier_id = %d.id, signature_request_id = %created.id, "signature requested for a state action");
        self.record(
            self.store.db(),
            p,
            d,
            "signature",
            format!(
                "Demande de signature envoyée à l'usager pour « {title} » : un SMS avec le lien de signature et un code lui a été envoyé"
            ),
            format!("action:{key}"),
        )
        .await
        .map_err(Failure::transient)
    }

    async fn propose_appointment(&self, p: &Planned, d: &dossier::Model) -> Result<(), Failure> {
        let Some(client) = self.appointment.clone() else {
            return Err(Failure::transient(
                "le service des rendez-vous n'est pas configuré (dossier.appointment_url)",
            ));
        };
        let mut client = client;
        let now = self.store.now();
        let types = client
            .list_appointment_types(apb::ListAppointmentTypesRequest::default())
            .await
            .map_err(|s| Failure::transient(format!("service des rendez-vous : {}", s.message())))?
            .into_inner();
        let Some(t) = types.types.iter().find(|t| t.id == p.appointment_type) else {
            return Err(Failure::permanent(format!(
                "le type de rendez-vous « {} » n'existe pas dans l'agenda de la mairie",
                p.appointment_type
            )));
        };
        if !t.public {
            // Booked by an agent only (its own window and desks): the agent
            // searches the agenda with the citizen.
            return self
                .record(
                    self.store.db(),
                    p,
                    d,
                    "task",
                    format!(
                        "À faire : réserver avec l'usager un rendez-vous « {} » (pris par un agent, dans l'agenda des rendez-vous)",
                        t.name
                    ),
                    format!("action:{}", p.key()),
                )
                .await
                .map_err(Failure::transient);
        }
        let slots = client
            .search_availability(apb::SearchAvailabilityRequest {
                appointment_type: p.appointment_type.clone(),
                start_time: Some(guichet_proto::convert::timestamp(now)),
                end_time: Some(guichet_proto::convert::timestamp(now + Duration::days(60))),
                page_size: 3,
                distinct_times: true,
                ..Default::default()
            })
            .await
            .map_err(|s| {
                Failure::of(tonic::Status::new(
                    s.code(),
                    format!("service des rendez-vous : {}", s.message()),
                ))
            })?
            .into_inner()
            .slots;
        let when: Vec<String> = slots
            .iter()
            .filter_map(|s| s.start_time.as_ref())
            .filter_map(guichet_proto::convert::datetime)
            .map(guichet_platform::french::short_day_hour)
            .collect();
        let free = if when.is_empty() {
            "aucun créneau libre dans les 60 prochains jours : inscrivez l'usager sur la liste d'attente".to_owned()
        } else {
            format!("prochains créneaux libres : {}", when.join(", "))
        };
        self.record(
            self.store.db(),
            p,
            d,
            "task",
            format!(
                "À faire : proposer à l'usager un rendez-vous « {} » et le réserver avec lui ({free})",
                t.name
            ),
            format!("action:{}", p.key()),
        )
        .await
        .map_err(Failure::transient)
    }
}

/// A document title without its parenthesised note, for the signer's page.
fn short_title(title: &str) -> String {
    let t = title.split(" (").next().unwrap_or(title);
    let t = t.split(", ").next().unwrap_or(t);
    t.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_title_is_shortened_for_the_signer() {
        assert_eq!(
            short_title(
                "Avenant au contrat d'accueil, préparé par la direction de l'établissement (PDF, envoyé à la signature)"
            ),
            "Avenant au contrat d'accueil"
        );
        assert_eq!(short_title("Contrat"), "Contrat");
    }

    #[test]
    fn an_action_key_names_its_state_entry() {
        let p = Planned {
            dossier_id: "d1".into(),
            state: "s".into(),
            revision: 3,
            index: 1,
            kind: "send_message".into(),
            template: "t".into(),
            appointment_type: String::new(),
            document: String::new(),
        };
        assert_eq!(p.key(), "action-d1-3-1");
    }
}
