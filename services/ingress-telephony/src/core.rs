//! The telephony ingress's domain core: CTI events (new call, answer,
//! hangup) kept as one row per call, CDR imports, callback requests, and
//! the intake events they stage.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use guichet_platform::bus::new_event_id;
use guichet_platform::clock::SharedClock;
use guichet_platform::contact::Phone;
use guichet_platform::db::is_unique_violation;
use guichet_platform::outbox::{Outbox, Staged};
use guichet_proto::convert::timestamp;
use guichet_proto::intake::v1::{
    Channel, CitizenHint, IntakeEvent, TelephonyDetails, intake_event,
};
use guichet_proto::telephony::v1 as pb;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, Set,
    TransactionTrait,
};

use crate::config::Config;
use crate::cti::{CtiEvent, CtiParams, Direction};
use crate::db::entities::{call, callback};
use crate::error::{Error, internal, internal_err, invalid_argument, unavailable};
use crate::grpc::callback_pb;
use crate::{cdr, cti};

#[derive(Clone)]
pub struct TelephonyApi {
    pub(crate) db: DatabaseConnection,
    pub(crate) outbox: Outbox,
    pub(crate) config: Arc<Config>,
    /// Blocked numbers in E.164.
    pub(crate) blocked: Arc<HashSet<String>>,
    pub(crate) clock: SharedClock,
}

/// What the webhook did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtiReply {
    Accepted,
    /// A blocked caller: the PBX is told to reject the call as busy.
    Reject,
    /// Nothing to do: an answer after the hangup, a repeated answer or hangup.
    Ignored,
}

impl CtiReply {
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            CtiReply::Accepted => "accepted",
            CtiReply::Reject => "rejected_blocked",
            CtiReply::Ignored => "ignored",
        }
    }
}

#[derive(Debug)]
pub(crate) enum CtiError {
    /// 422: the request contradicts what is known of the call.
    Invalid(String),
    Internal(String),
}

fn internal_cti(e: impl std::fmt::Display) -> CtiError {
    CtiError::Internal(e.to_string())
}

/// The citizen's side of a call: (E.164 number, withheld).
fn citizen_number(raw: &str) -> (Option<String>, bool) {
    let (_, raw) = split_caller_id(raw);
    if cti::is_withheld(raw) {
        return (None, true);
    }
    (Phone::parse(raw).ok().map(|p| p.as_str().to_owned()), false)
}

/// A caller ID as PBXs write it, `"Jean Dupont" <0612345678>`: the name
/// (empty when there is none, or it is only the number again or a PBX
/// placeholder) and the number part.
pub fn split_caller_id(raw: &str) -> (String, &str) {
    let raw = raw.trim();
    let (name, number) = match (raw.find('<'), raw.rfind('>')) {
        (Some(open), Some(close)) if open < close => (
            raw[..open].trim().trim_matches('"').trim(),
            raw[open + 1..close].trim(),
        ),
        _ => ("", raw),
    };
    let placeholder = [
        "anonymous",
        "unknown",
        "inconnu",
        "private",
        "restricted",
        "asterisk",
    ]
    .iter()
    .any(|p| name.eq_ignore_ascii_case(p));
    let only_digits = name
        .chars()
        .all(|c| c.is_ascii_digit() || c == '+' || c == ' ' || c == '.' || c == '-');
    if placeholder || only_digits || !name.chars().any(char::is_alphabetic) {
        return (String::new(), number);
    }
    (name.to_owned(), number)
}

/// The cause of a call ended because its hangup never came.
pub const LOST: &str = "lost";

/// Whole seconds from `from` to `to`, rounded to the nearest (41.995 s is
/// 42 s, not 41).
fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i32 {
    let millis = (to - from).num_milliseconds().max(0);
    i32::try_from((millis + 500) / 1000).unwrap_or(i32::MAX)
}

fn duration_fr(secs: i32) -> String {
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// The intake event of an ended inbound call (French text for the agent).
fn call_event(c: &call::Model, event_id: &str) -> IntakeEvent {
    let waiting = c.waiting_seconds.unwrap_or(0);
    let talk = c.talk_seconds.unwrap_or(0);
    let local = guichet_platform::calendar::to_paris(c.started_at);
    let when = local.format("%d/%m/%Y à %H:%M");
    let queue = if c.queue.is_empty() {
        String::new()
    } else {
        format!(", file « {} »", c.queue)
    };
    let number = if c.anonymous {
        " (numéro masqué)"
    } else {
        ""
    };
    // The subject is what routing shows in the queue and on the timeline
    // ("Appel : reçu, attente 45 s, conversation 3 min 12 s, répondu par Anne").
    let (subject, body) = if c.missed && c.callback_requested {
        (
            format!(
                "demande de rappel{number} (attente {})",
                duration_fr(waiting)
            ),
            format!(
                "Appel entrant le {when}{queue}{number} : l'usager demande à être rappelé. Attente : {}.",
                duration_fr(waiting)
            ),
        )
    } else if c.missed {
        let how = if c.voicemail {
            "message laissé sur la messagerie"
        } else {
            "raccroché avant réponse"
        };
        (
            format!(
                "manqué{number}, à rappeler (attente {})",
                duration_fr(waiting)
            ),
            format!(
                "Appel entrant le {when}{queue}{number}, {how}. Attente : {}.",
                duration_fr(waiting)
            ),
        )
    } else {
        let by = if c.answered_by.is_empty() {
            String::new()
        } else {
            format!(", répondu par {}", c.answered_by)
        };
        (
            format!(
                "reçu{number}, attente {}, conversation {}{by}",
                duration_fr(waiting),
                duration_fr(talk)
            ),
            format!(
                "Appel entrant le {when}{queue}{by}. Attente : {}, conversation : {}.",
                duration_fr(waiting),
                duration_fr(talk)
            ),
        )
    };
    IntakeEvent {
        id: event_id.to_owned(),
        channel: Channel::Telephony as i32,
        received_at: Some(timestamp(c.started_at)),
        citizen: c.citizen_phone.as_ref().map(|p| {
            let name = guichet_platform::names::split_name(&c.caller_name);
            CitizenHint {
                given_name: name.given,
                family_name: name.family,
                phones: vec![p.clone()],
                ..Default::default()
            }
        }),
        subject,
        body,
        attachments: vec![],
        quoted_reference: String::new(),
        details: Some(intake_event::Details::Telephony(TelephonyDetails {
            call_id: c.call_id.clone(),
            direction: c.direction.clone(),
            queue: c.queue.clone(),
            ivr_choice: c.queue.clone(),
            waiting_seconds: u32::try_from(waiting).unwrap_or(0),
            talk_seconds: u32::try_from(talk).unwrap_or(0),
            missed: c.missed,
            callback_requested: c.callback_requested,
            answered_by: c.answered_by.clone(),
            cause: c.cause.clone(),
            anonymous: c.anonymous,
            source: c.source.clone(),
            voicemail: c.voicemail,
            answered_agent_id: c.answered_agent_id.clone().unwrap_or_default(),
        })),
    }
}

/// The `call_ended` domain event of a call (for indicators; no numbers).
fn call_ended(outbox: &Outbox, c: &call::Model) -> Staged {
    let secs = |v: Option<i32>| v.and_then(|s| u32::try_from(s).ok()).unwrap_or(0);
    let mut staged = outbox.domain_event(
        "telephony",
        "call_ended",
        format!("calls/{}", c.call_id),
        &guichet_proto::events::v1::CallEnded {
            call_id: c.call_id.clone(),
            direction: c.direction.clone(),
            queue: c.queue.clone(),
            cause: c.cause.clone(),
            waiting_seconds: secs(c.waiting_seconds),
            talk_seconds: secs(c.talk_seconds),
            missed: c.missed,
            voicemail: c.voicemail,
            anonymous: c.anonymous,
            blocked: c.blocked,
            callback_requested: c.callback_requested,
            source: c.source.clone(),
            started_at: Some(timestamp(c.started_at)),
            ended_at: c.ended_at.map(timestamp),
            intake_event_id: c.intake_event_id.clone().unwrap_or_default(),
        },
    );
    if let Some(t) = c.ended_at {
        staged.event.time = t;
    }
    staged
}

fn count_call(c: &call::Model) {
    let outcome = if c.blocked {
        "blocked"
    } else if c.missed {
        "missed"
    } else if c.answered_at.is_some() {
        "answered"
    } else {
        "unanswered"
    };
    metrics::counter!(
        "guichet_telephony_calls_total",
        "direction" => c.direction.clone(),
        "outcome" => outcome,
        "anonymous" => if c.anonymous { "true" } else { "false" },
        "source" => c.source.clone(),
    )
    .increment(1);
    if let Some(w) = c.waiting_seconds {
        metrics::histogram!("guichet_telephony_waiting_seconds", "direction" => c.direction.clone())
            .record(f64::from(w));
    }
    if let Some(t) = c.talk_seconds.filter(|_| c.answered_at.is_some()) {
        metrics::histogram!("guichet_telephony_talk_seconds", "direction" => c.direction.clone())
            .record(f64::from(t));
    }
}

impl TelephonyApi {
    fn staged(&self, event: &IntakeEvent, subject: String, time: DateTime<Utc>) -> Staged {
        self.outbox.intake_event(event, subject, time)
    }

    /// Publish a committed event now; if JetStream is away the outbox
    /// relay publishes it when it is back (the write is already durable).
    async fn publish(&self, staged: &Staged) {
        if let Err(error) = self.outbox.publish_now(staged).await {
            tracing::warn!(%error, event_id = %staged.event.id, "event left to the outbox relay");
            self.outbox.notify();
        }
    }

    pub(crate) async fn find_call(
        &self,
        call_id: &str,
    ) -> Result<Option<call::Model>, sea_orm::DbErr> {
        call::Entity::find_by_id(call_id.to_owned())
            .one(&self.db)
            .await
    }

    fn is_voicemail(&self, p: &CtiParams) -> bool {
        self.config.voicemail_users.iter().any(|v| {
            p.users.iter().any(|u| u.eq_ignore_ascii_case(v))
                || p.answering_number.eq_ignore_ascii_case(v)
        })
    }

    #[tracing::instrument(skip_all, fields(call_id = %p.call_id, event = ?p.event))]
    pub(crate) async fn handle_cti(&self, p: CtiParams) -> Result<CtiReply, CtiError> {
        match p.event {
            CtiEvent::NewCall => self.new_call(p).await,
            CtiEvent::Answer => self.answer(p).await,
            CtiEvent::Hangup => self.hangup(p).await,
        }
    }

    async fn new_call(&self, p: CtiParams) -> Result<CtiReply, CtiError> {
        let now = self.clock.now();
        let direction = p.direction.unwrap_or(Direction::In);
        let raw = match direction {
            Direction::In => &p.from,
            Direction::Out => &p.to,
        };
        let (phone, anonymous) = citizen_number(raw);
        let (caller_name, _) = split_caller_id(raw);
        let caller_name = if anonymous {
            String::new()
        } else {
            caller_name
        };
        let blocked =
            direction == Direction::In && phone.as_ref().is_some_and(|n| self.blocked.contains(n));
        if self
            .find_call(&p.call_id)
            .await
            .map_err(internal_cti)?
            .is_some()
        {
            return Err(CtiError::Invalid(format!(
                "call `{}` already exists (duplicate newCall)",
                p.call_id
            )));
        }
        let row = call::ActiveModel {
            call_id: Set(p.call_id.clone()),
            direction: Set(direction.as_str().to_owned()),
            citizen_phone: Set(phone),
            caller_name: Set(caller_name),
            anonymous: Set(anonymous),
            blocked: Set(blocked),
            queue: Set(p.queue.clone()),
            state: Set(if blocked { "ended" } else { "ringing" }.to_owned()),
            answered_by: Set(String::new()),
            answered_agent_id: Set(None),
            cause: Set(if blocked {
                "blocked".to_owned()
            } else {
                String::new()
            }),
            voicemail: Set(false),
            missed: Set(false),
            callback_requested: Set(false),
            waiting_seconds: Set(blocked.then_some(0)),
            talk_seconds: Set(blocked.then_some(0)),
            source: Set("cti".to_owned()),
            intake_event_id: Set(None),
            started_at: Set(now),
            answered_at: Set(None),
            ended_at: Set(blocked.then_some(now)),
        };
        // The agents it rings at: their pages pop the caller's fiche.
        let ringing = if blocked || direction == Direction::Out {
            Vec::new()
        } else {
            self.agents_of(&p.users).await.map_err(internal_cti)?
        };
        let txn = self.db.begin().await.map_err(internal_cti)?;
        let inserted = match row.insert(&txn).await {
            Ok(c) => {
                let ended = blocked.then(|| call_ended(&self.outbox, &c));
                if let Some(e) = &ended {
                    self.outbox.stage(&txn, e).await.map_err(internal_cti)?;
                }
                let pop =
                    (!ringing.is_empty()).then(|| self.ringing_event(&c.call_id, &ringing, now));
                if let Some(e) = &pop {
                    self.outbox.stage(&txn, e).await.map_err(internal_cti)?;
                }
                txn.commit().await.map_err(internal_cti)?;
                if let Some(e) = ended {
                    self.publish(&e).await;
                }
                if let Some(e) = pop {
                    self.publish(&e).await;
                }
                Ok(c)
            }
            Err(e) => Err(e),
        };
        match inserted {
            Ok(c) => {
                if blocked {
                    count_call(&c);
                    tracing::info!(call_id = %c.call_id, "blocked caller rejected");
                    return Ok(CtiReply::Reject);
                }
                tracing::info!(call_id = %c.call_id, direction = %c.direction, anonymous, "call started");
                Ok(CtiReply::Accepted)
            }
            Err(e) if is_unique_violation(&e) => Err(CtiError::Invalid(format!(
                "call `{}` already exists (duplicate newCall)",
                p.call_id
            ))),
            Err(e) => Err(internal_cti(e)),
        }
    }

    async fn answer(&self, p: CtiParams) -> Result<CtiReply, CtiError> {
        let now = self.clock.now();
        let Some(c) = self.find_call(&p.call_id).await.map_err(internal_cti)? else {
            return Err(CtiError::Invalid(format!(
                "unknown call `{}` (answer without newCall)",
                p.call_id
            )));
        };
        if c.state != "ringing" {
            // An answer after the hangup (events crossed), or a repeat.
            tracing::info!(call_id = %c.call_id, state = %c.state, "answer ignored");
            return Ok(CtiReply::Ignored);
        }
        let answered_by = if p.users.is_empty() {
            p.answering_number.clone()
        } else {
            p.users.join(", ")
        };
        let mut answering = p.users.clone();
        answering.push(p.answering_number.clone());
        let agent = if c.direction == "in" {
            self.agents_of(&answering)
                .await
                .map_err(internal_cti)?
                .into_iter()
                .next()
        } else {
            None
        };
        let txn = self.db.begin().await.map_err(internal_cti)?;
        let res = call::Entity::update_many()
            .col_expr(call::Column::State, Expr::value("answered"))
            .col_expr(call::Column::AnsweredAt, Expr::value(now))
            .col_expr(
                call::Column::AnsweredBy,
                Expr::value(answered_by.chars().take(200).collect::<String>()),
            )
            .col_expr(call::Column::AnsweredAgentId, Expr::value(agent.clone()))
            .col_expr(call::Column::Voicemail, Expr::value(self.is_voicemail(&p)))
            .filter(call::Column::CallId.eq(c.call_id.as_str()))
            .filter(call::Column::State.eq("ringing"))
            .exec(&txn)
            .await
            .map_err(internal_cti)?;
        if res.rows_affected == 0 {
            return Ok(CtiReply::Ignored);
        }
        let pop = agent
            .as_deref()
            .map(|a| self.answered_event(&c.call_id, a, now));
        if let Some(e) = &pop {
            self.outbox.stage(&txn, e).await.map_err(internal_cti)?;
        }
        txn.commit().await.map_err(internal_cti)?;
        if let Some(e) = pop {
            self.publish(&e).await;
        }
        tracing::info!(call_id = %c.call_id, "call answered");
        Ok(CtiReply::Accepted)
    }

    /// End the calls that never got their hangup, `stale_call_minutes`
    /// after they began: cause `lost`, missed when never answered (so a
    /// callback reaches the queue), talk time unknown (0). Returns how many.
    pub(crate) async fn end_stale_calls(&self) -> Result<usize, CtiError> {
        let cutoff = self.clock.now()
            - chrono::Duration::minutes(
                i64::try_from(self.config.stale_call_minutes).unwrap_or(i64::MAX / 60_000),
            );
        let stale = call::Entity::find()
            .filter(call::Column::State.ne("ended"))
            .filter(call::Column::StartedAt.lt(cutoff))
            .limit(200)
            .all(&self.db)
            .await
            .map_err(internal_cti)?;
        let mut ended = 0;
        for c in stale {
            let reply = self
                .hangup(CtiParams {
                    event: cti::CtiEvent::Hangup,
                    call_id: c.call_id.clone(),
                    direction: None,
                    from: String::new(),
                    to: String::new(),
                    users: vec![],
                    queue: String::new(),
                    cause: LOST.into(),
                    answering_number: String::new(),
                })
                .await?;
            if reply == CtiReply::Accepted {
                ended += 1;
            }
        }
        if ended > 0 {
            metrics::counter!("guichet_telephony_calls_lost_total").increment(ended as u64);
            tracing::warn!(calls = ended, "calls without a hangup ended as lost");
        }
        Ok(ended)
    }

    async fn hangup(&self, p: CtiParams) -> Result<CtiReply, CtiError> {
        let now = self.clock.now();
        let Some(c) = self.find_call(&p.call_id).await.map_err(internal_cti)? else {
            return Err(CtiError::Invalid(format!(
                "unknown call `{}` (hangup without newCall)",
                p.call_id
            )));
        };
        if c.state == "ended" {
            tracing::info!(call_id = %c.call_id, "repeated hangup ignored");
            return Ok(CtiReply::Ignored);
        }
        let inbound = c.direction == "in";
        let waiting = seconds_between(c.started_at, c.answered_at.unwrap_or(now));
        // A lost call's end is unknown: no talk time is made up.
        let talk = if p.cause == LOST {
            0
        } else {
            c.answered_at.map_or(0, |a| seconds_between(a, now))
        };
        let missed = inbound && (c.answered_at.is_none() || c.voicemail);
        let queue = if p.queue.is_empty() {
            c.queue.clone()
        } else {
            p.queue.clone()
        };
        let callback_requested = inbound && self.config.callback_queues.contains(&queue);
        let event_id = inbound.then(new_event_id);
        let ended = call::Model {
            state: "ended".into(),
            cause: p.cause.clone(),
            queue,
            missed,
            callback_requested,
            waiting_seconds: Some(waiting),
            talk_seconds: Some(talk),
            intake_event_id: event_id.clone(),
            ended_at: Some(now),
            ..c
        };
        let txn = self.db.begin().await.map_err(internal_cti)?;
        let res = call::Entity::update_many()
            .col_expr(call::Column::State, Expr::value("ended"))
            .col_expr(call::Column::Cause, Expr::value(ended.cause.clone()))
            .col_expr(call::Column::Queue, Expr::value(ended.queue.clone()))
            .col_expr(call::Column::Missed, Expr::value(missed))
            .col_expr(
                call::Column::CallbackRequested,
                Expr::value(callback_requested),
            )
            .col_expr(call::Column::WaitingSeconds, Expr::value(waiting))
            .col_expr(call::Column::TalkSeconds, Expr::value(talk))
            .col_expr(call::Column::IntakeEventId, Expr::value(event_id.clone()))
            .col_expr(call::Column::EndedAt, Expr::value(now))
            .filter(call::Column::CallId.eq(ended.call_id.as_str()))
            .filter(call::Column::State.ne("ended"))
            .exec(&txn)
            .await
            .map_err(internal_cti)?;
        if res.rows_affected == 0 {
            return Ok(CtiReply::Ignored);
        }
        let staged = event_id.as_deref().map(|id| {
            let event = call_event(&ended, id);
            self.staged(&event, format!("calls/{}", ended.call_id), now)
        });
        if let Some(s) = &staged {
            self.outbox.stage(&txn, s).await.map_err(internal_cti)?;
        }
        let ended_event = call_ended(&self.outbox, &ended);
        self.outbox
            .stage(&txn, &ended_event)
            .await
            .map_err(internal_cti)?;
        txn.commit().await.map_err(internal_cti)?;
        count_call(&ended);
        tracing::info!(
            call_id = %ended.call_id,
            missed,
            callback_requested,
            waiting_seconds = waiting,
            talk_seconds = talk,
            "call ended"
        );
        // The call is durable: the PBX may go on. Publish now; if JetStream
        // is away the relay publishes it when it is back.
        if let Some(s) = staged {
            self.publish(&s).await;
        }
        self.publish(&ended_event).await;
        Ok(CtiReply::Accepted)
    }

    /// Import a Master.csv file: each new record is a call (and, inbound,
    /// an intake event); records already known by uniqueid are duplicates.
    pub(crate) async fn import_cdr_bytes(
        &self,
        bytes: &[u8],
    ) -> Result<pb::ImportCdrResponse, Error> {
        if bytes.len() > self.config.max_cdr_bytes {
            return Err(invalid_argument(
                "csv",
                format!("must be at most {} bytes", self.config.max_cdr_bytes),
            ));
        }
        let (records, errors) = cdr::parse(bytes, self.config.cdr_local_time);
        let mut imported = 0u32;
        let mut duplicates = 0u32;
        for r in records {
            let outbound = self.config.cdr_outbound_contexts.contains(&r.dcontext);
            let direction = if outbound { "out" } else { "in" };
            let (phone, anonymous) = citizen_number(if outbound { &r.dst } else { &r.src });
            // The caller ID names the caller of an inbound call only.
            let caller_name = if outbound || anonymous {
                String::new()
            } else {
                split_caller_id(&r.clid).0
            };
            let answered = r.disposition == "ANSWERED" && r.billsec > 0;
            let waiting = i32::try_from(r.duration - r.billsec).unwrap_or(0);
            let talk = i32::try_from(r.billsec).unwrap_or(0);
            let event_id = (!outbound).then(new_event_id);
            let model = call::Model {
                call_id: r.uniqueid.clone(),
                direction: direction.into(),
                citizen_phone: phone,
                caller_name,
                anonymous,
                blocked: false,
                queue: String::new(),
                state: "ended".into(),
                answered_by: String::new(),
                answered_agent_id: None,
                cause: r.disposition.clone(),
                voicemail: false,
                missed: !outbound && !answered,
                callback_requested: false,
                waiting_seconds: Some(waiting),
                talk_seconds: Some(talk),
                source: "cdr".into(),
                intake_event_id: event_id.clone(),
                started_at: r.start,
                answered_at: if answered { r.answer } else { None },
                ended_at: Some(r.end),
            };
            if self
                .find_call(&model.call_id)
                .await
                .map_err(internal_err("import cdr"))?
                .is_some()
            {
                duplicates += 1;
                continue;
            }
            let txn = self.db.begin().await.map_err(internal_err("import cdr"))?;
            let active: call::ActiveModel = model.clone().into();
            match call::Entity::insert(active).exec(&txn).await {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    duplicates += 1;
                    continue;
                }
                Err(e) => return Err(internal("import cdr", e)),
            }
            if let Some(id) = event_id.as_deref() {
                let event = call_event(&model, id);
                let staged =
                    self.staged(&event, format!("calls/{}", model.call_id), self.clock.now());
                self.outbox
                    .stage(&txn, &staged)
                    .await
                    .map_err(internal_err("import cdr"))?;
            }
            self.outbox
                .stage(&txn, &call_ended(&self.outbox, &model))
                .await
                .map_err(internal_err("import cdr"))?;
            txn.commit().await.map_err(internal_err("import cdr"))?;
            count_call(&model);
            imported += 1;
        }
        // Answer once JetStream has every event of this import.
        self.outbox
            .flush()
            .await
            .map_err(|e| unavailable("publish intake events", e))?;
        metrics::counter!("guichet_telephony_cdr_records_total", "outcome" => "imported")
            .increment(u64::from(imported));
        metrics::counter!("guichet_telephony_cdr_records_total", "outcome" => "duplicate")
            .increment(u64::from(duplicates));
        metrics::counter!("guichet_telephony_cdr_records_total", "outcome" => "malformed")
            .increment(errors.len() as u64);
        tracing::info!(
            imported,
            duplicates,
            malformed = errors.len(),
            "cdr file imported"
        );
        Ok(pb::ImportCdrResponse {
            imported,
            duplicates,
            errors,
        })
    }

    async fn callback_by_request(&self, rid: &str) -> Result<Option<callback::Model>, Error> {
        callback::Entity::find()
            .filter(callback::Column::RequestId.eq(rid))
            .one(&self.db)
            .await
            .map_err(internal_err("find callback"))
    }
}

impl TelephonyApi {
    /// Record a callback request and stage its IntakeEvent in the same
    /// transaction; answer once JetStream has the event. Idempotent on
    /// `request_id`.
    pub(crate) async fn record_callback(
        &self,
        requested_by: &str,
        req: pb::RequestCallbackRequest,
    ) -> Result<pb::Callback, Error> {
        let phone = Phone::parse(&req.phone).map_err(|e| invalid_argument("phone", e))?;
        let reason = req.reason.trim();
        if reason.chars().count() > 2000 {
            return Err(invalid_argument(
                "reason",
                "must be at most 2000 characters",
            ));
        }
        let request_id = req.request_id.trim();
        if request_id.len() > 128 {
            return Err(invalid_argument(
                "request_id",
                "must be at most 128 characters",
            ));
        }
        let call_id = req.call_id.trim();
        if call_id.len() > 200 {
            return Err(invalid_argument(
                "call_id",
                "must be at most 200 characters",
            ));
        }
        let ivr_choice = req.ivr_choice.trim();
        if ivr_choice.len() > 100 {
            return Err(invalid_argument(
                "ivr_choice",
                "must be at most 100 characters",
            ));
        }
        let request_id = (!request_id.is_empty()).then(|| request_id.to_owned());
        if let Some(rid) = &request_id
            && let Some(c) = self.callback_by_request(rid).await?
        {
            self.outbox
                .flush()
                .await
                .map_err(|e| unavailable("publish intake event", e))?;
            return Ok(callback_pb(c));
        }
        let now = self.clock.now();
        let id = uuid::Uuid::now_v7().to_string();
        tracing::Span::current().record("callback_id", id.as_str());
        let event_id = new_event_id();
        let local = guichet_platform::calendar::to_paris(now).format("%d/%m/%Y à %H:%M");
        let body = if reason.is_empty() {
            format!("Demande de rappel le {local}.")
        } else {
            format!("Demande de rappel le {local} : {reason}")
        };
        let event = IntakeEvent {
            id: event_id.clone(),
            channel: Channel::Telephony as i32,
            received_at: Some(timestamp(now)),
            citizen: Some(CitizenHint {
                phones: vec![phone.as_str().to_owned()],
                ..Default::default()
            }),
            subject: "demande de rappel".into(),
            body,
            attachments: vec![],
            quoted_reference: String::new(),
            details: Some(intake_event::Details::Telephony(TelephonyDetails {
                call_id: call_id.to_owned(),
                direction: "in".into(),
                ivr_choice: ivr_choice.to_owned(),
                callback_requested: true,
                source: "request".into(),
                ..Default::default()
            })),
        };
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("request callback"))?;
        let res = callback::ActiveModel {
            id: Set(id.clone()),
            request_id: Set(request_id.clone()),
            phone: Set(phone.as_str().to_owned()),
            call_id: Set(call_id.to_owned()),
            requested_by: Set(requested_by.to_owned()),
            intake_event_id: Set(event_id.clone()),
            requested_at: Set(now),
        }
        .insert(&txn)
        .await;
        let c = match res {
            Ok(c) => c,
            Err(e) if is_unique_violation(&e) && request_id.is_some() => {
                drop(txn);
                let c = self
                    .callback_by_request(request_id.as_deref().unwrap_or_default())
                    .await?
                    .ok_or_else(|| internal("request callback", e))?;
                return Ok(callback_pb(c));
            }
            Err(e) => return Err(internal("request callback", e)),
        };
        let staged = self.staged(&event, format!("callbacks/{id}"), now);
        self.outbox
            .stage(&txn, &staged)
            .await
            .map_err(internal_err("request callback"))?;
        txn.commit()
            .await
            .map_err(internal_err("request callback"))?;
        self.outbox
            .publish_now(&staged)
            .await
            .map_err(|e| unavailable("publish intake event", e))?;
        metrics::counter!("guichet_telephony_callback_requests_total").increment(1);
        tracing::info!(callback_id = %c.id, "callback requested");
        Ok(callback_pb(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_durations_round_to_the_nearest_second() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
        assert_eq!(seconds_between(t0, at(41_995)), 42);
        assert_eq!(seconds_between(t0, at(41_499)), 41);
        assert_eq!(seconds_between(t0, at(500)), 1);
        assert_eq!(seconds_between(at(1_000), t0), 0, "never negative");
    }

    #[test]
    fn caller_ids_give_the_name_and_the_number() {
        assert_eq!(
            split_caller_id("\"Jean Dupont\" <0612345678>"),
            ("Jean Dupont".to_owned(), "0612345678")
        );
        assert_eq!(
            split_caller_id("DUPONT Jean <+33612345678>"),
            ("DUPONT Jean".to_owned(), "+33612345678")
        );
        assert_eq!(split_caller_id("0612345678"), (String::new(), "0612345678"));
        for placeholder in [
            "\"0612345678\" <0612345678>",
            "\"anonymous\" <anonymous>",
            "\"\" <0612345678>",
            "\"+33 6 12 34 56 78\" <+33612345678>",
        ] {
            assert_eq!(split_caller_id(placeholder).0, "", "{placeholder}");
        }
        assert_eq!(
            citizen_number("\"Jean Dupont\" <06 12 34 56 78>"),
            (Some("+33612345678".to_owned()), false)
        );
    }
}
