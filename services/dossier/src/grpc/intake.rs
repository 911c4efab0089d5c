//! `CorrelateIntake`: one intake request to its citizen and dossier, in one
//! call (the policy is in [`crate::intake`]).

use prost::Message;

use super::*;
use crate::intake::{Attachment, Correlated, Intake, IntakeError, Mode, Outcome};

fn intake_status(e: IntakeError) -> Status {
    match e {
        IntakeError::Db(e) => internal_err("correlate intake")(e),
        IntakeError::Conflict => Status::aborted("the dossier changed concurrently: retry"),
        IntakeError::Catalog(why) => failed_precondition("PROCESS_VERSION", "processes", why),
    }
}

/// The answer kept for a replay: everything but the dossier, read fresh.
fn response_pb(
    c: &Correlated,
    refused: &[String],
    hint_refused: &str,
) -> pb::CorrelateIntakeResponse {
    pb::CorrelateIntakeResponse {
        dossier: None,
        citizen_id: c.citizen_id.clone(),
        correlation: c.correlation.to_owned(),
        candidates: c
            .candidates
            .iter()
            .map(|x| pb::Candidate {
                citizen: Some(citizens::citizen_pb(x.citizen.clone())),
                confidence: x.confidence,
                why: x.why.clone(),
            })
            .collect(),
        unknown_references: c.unknown_references.clone(),
        summary: c.summary.clone(),
        documents_added: c.documents_added,
        documents_refused: refused.to_vec(),
        refused: hint_refused.to_owned(),
        citizen_created: c.citizen_created,
    }
}

pub(super) async fn correlate_intake(
    api: &DossierApi,
    request: Request<pb::CorrelateIntakeRequest>,
) -> Result<Response<pb::CorrelateIntakeResponse>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let request_id = non_empty(&req.request_id)
        .filter(|r| r.len() <= 128)
        .ok_or_else(|| invalid_argument("request_id", "is required (at most 128 characters)"))?;
    let channel = Channel::try_from(req.channel)
        .ok()
        .filter(|c| *c != Channel::Unspecified)
        .ok_or_else(|| invalid_argument("channel", "must be a known channel"))?;
    let mode = match pb::IntakeMode::try_from(req.mode) {
        Ok(pb::IntakeMode::Request) | Ok(pb::IntakeMode::Unspecified) => Mode::Request,
        Ok(pb::IntakeMode::Done) => Mode::Done,
        Ok(pb::IntakeMode::Automatic) => Mode::Automatic,
        Err(_) => return Err(invalid_argument("mode", "is not a known mode")),
    };
    let occurred_at = match &req.occur_time {
        Some(ts) => {
            datetime(ts).ok_or_else(|| invalid_argument("occur_time", "is out of range"))?
        }
        None => api.store.now(),
    };
    let summary = text_field("summary", &req.summary, 4000)?;
    let catalog = api.store.catalog();
    let triage_id = non_empty(&req.triage_process_id).unwrap_or(&api.config.default_process);
    let wanted = non_empty(&req.process_id).unwrap_or(triage_id);
    let process = match catalog.get_latest(wanted) {
        Some(def) => def,
        // A rule naming a process the catalog does not have: triage rather
        // than losing the request.
        None if wanted != triage_id => {
            tracing::warn!(process_id = %wanted, "intake names an unknown process, using triage");
            catalog.get_latest(triage_id).ok_or_else(|| {
                invalid_argument(
                    "triage_process_id",
                    format!("`{triage_id}` is not in the process catalog"),
                )
            })?
        }
        None => {
            return Err(invalid_argument(
                "process_id",
                format!("`{wanted}` is not in the process catalog"),
            ));
        }
    };
    // What the channel captured may not parse (a mistyped number): the
    // request still reaches an agent, who identifies the person. The answer
    // names the field only, never its value.
    let has_hint = guichet_platform::contact::hint_given(req.hint.as_ref());
    let (hint, hint_refused) = if !has_hint || mode == Mode::Automatic {
        (None, None)
    } else {
        match parse_hint(req.hint.as_ref(), "hint") {
            Ok(h) => (Some(h), None),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                (None, Some(s.message().to_owned()))
            }
            Err(s) => return Err(s),
        }
    };
    // Attachments the dossier keeps; the others are told, not fatal.
    let mut attachments = Vec::new();
    let mut refused = Vec::new();
    for (i, a) in req.attachments.iter().enumerate() {
        if a.sha256.trim().is_empty() {
            continue;
        }
        let checked = async {
            let media_type = documents::accepted_media_type(api, &a.media_type)?;
            let filename = documents::file_name(&a.filename)?.to_owned();
            let (sha256, size_bytes) = documents::stored_object(api, &p, a).await?;
            documents::stored_matches(api, &sha256, &media_type).await?;
            Ok::<_, Status>(Attachment {
                sha256,
                size_bytes,
                media_type,
                filename,
            })
        }
        .await;
        match checked {
            Ok(x) => attachments.push(x),
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                refused.push(format!("attachments[{i}]: {}", s.message()));
            }
            Err(s) => return Err(s),
        }
    }
    let refs: Vec<String> = req
        .quoted_references
        .iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    let hint_refused_text = hint_refused.clone().unwrap_or_default();
    let intake = Intake {
        request_id,
        channel: channel.slug(),
        occurred_at,
        mode,
        hint,
        hint_refused,
        thread_reference: non_empty(&req.thread_reference),
        quoted_references: &refs,
        appointment_dossier_id: non_empty(&req.appointment_dossier_id),
        triage: process.id == triage_id,
        process,
        window: (req.correlation_window_seconds > 0)
            .then(|| chrono::Duration::seconds(i64::from(req.correlation_window_seconds))),
        summary: &summary,
        attachments,
        actor: &p.subject,
    };
    let outcome = api
        .store
        .correlate_intake(intake, |c| {
            response_pb(c, &refused, &hint_refused_text).encode_to_vec()
        })
        .await
        .map_err(intake_status)?;
    let (mut response, dossier) = match outcome {
        Outcome::Done(c) => {
            tracing::info!(
                dossier_id = c.dossier.as_ref().map(|d| d.id.as_str()).unwrap_or(""),
                correlation = c.correlation,
                documents_added = c.documents_added,
                "intake correlated"
            );
            (response_pb(&c, &refused, &hint_refused_text), c.dossier)
        }
        Outcome::Replayed { response, dossier } => (
            pb::CorrelateIntakeResponse::decode(response.as_slice())
                .map_err(|e| Status::internal(format!("stored intake answer: {e}")))?,
            dossier,
        ),
    };
    // The dossier's identity and state, and its follow code; its links and
    // other citizens are not read here (GetDossier has them).
    response.dossier = match dossier {
        Some(d) => {
            let mut pb = dossier_message(&api.store.catalog(), d, vec![], vec![]);
            pb.follow_code = api
                .follow
                .code(&pb.id)
                .await
                .map_err(internal_err("follow code"))?;
            Some(pb)
        }
        None => None,
    };
    Ok(Response::new(response))
}

pub(super) async fn list_intake_placements(
    api: &DossierApi,
    request: Request<pb::ListIntakePlacementsRequest>,
) -> Result<Response<pb::ListIntakePlacementsResponse>, Status> {
    let p = auth::caller(&request)?;
    let ids = request.into_inner().request_ids;
    if ids.len() > 500 {
        return Err(invalid_argument("request_ids", "at most 500 at once"));
    }
    if ids.iter().any(|i| i.is_empty() || i.len() > 128) {
        return Err(invalid_argument(
            "request_ids",
            "each is an intake event id (1 to 128 characters)",
        ));
    }
    let rows = api
        .store
        .placements(&ids)
        .await
        .map_err(internal_err("list intake placements"))?;
    Ok(Response::new(pb::ListIntakePlacementsResponse {
        placements: rows
            .into_iter()
            .map(|(request_id, dossier_id, group)| pb::IntakePlacement {
                request_id,
                readable: group.is_empty() || in_group(&p, &group),
                dossier_id,
            })
            .collect(),
    }))
}
