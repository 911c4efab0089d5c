//! `EmailService`: agents answer a dossier's thread and read its messages.

use std::collections::HashMap;

use guichet_platform::auth;
use guichet_platform::db::is_unique_violation;
use guichet_platform::grpc::{
    failed_precondition, internal_err, invalid_argument, not_found, page_size, unavailable,
};
use guichet_proto::convert::timestamp;
use guichet_proto::email::v1 as pb;
use guichet_proto::notification::v1::Attachment;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use tonic::{Request, Response, Status};

use crate::acks::{Outbound, REPLY_TEMPLATE};
use crate::db::entities::email_message;
use crate::{EmailApi, StoredPart};

/// Longest answer accepted (characters).
const MAX_REPLY_CHARS: usize = 100_000;

pub fn message_pb(m: &email_message::Model) -> pb::EmailMessage {
    let parts: Vec<StoredPart> = serde_json::from_str(&m.parts).unwrap_or_default();
    pb::EmailMessage {
        name: format!("emailMessages/{}", m.id),
        direction: match m.direction.as_str() {
            "in" => pb::Direction::In,
            "out" => pb::Direction::Out,
            _ => pb::Direction::Unspecified,
        } as i32,
        message_id: m.message_id.clone(),
        in_reply_to: m.in_reply_to.clone(),
        references: m.references.split_whitespace().map(str::to_owned).collect(),
        subject: m.subject.clone(),
        from_address: m.from_address.clone(),
        to_address: m.to_address.clone(),
        text: m.text_clean.clone(),
        full_text: m.text_full.clone(),
        raw_sha256: m.raw_sha256.clone(),
        size_bytes: m.size_bytes.max(0) as u64,
        source: m.source.clone(),
        intake_event_id: m.intake_event_id.clone().unwrap_or_default(),
        dossier_id: m.dossier_id.clone(),
        dossier_reference: m.dossier_reference.clone(),
        auto_submitted: m.auto_submitted,
        auto_reason: m.auto_reason.clone(),
        bounce: m.bounce,
        parts: parts
            .into_iter()
            .map(|p| pb::EmailPart {
                filename: p.filename,
                media_type: p.media_type,
                size_bytes: p.size_bytes,
                sha256: p.sha256,
                rejected_reason: p.rejected,
                inline: p.inline,
            })
            .collect(),
        notification_id: m.notification_id.clone(),
        create_time: Some(timestamp(m.created_at)),
    }
}

type Bearer = Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>;

fn bearer<T>(request: &Request<T>) -> Bearer {
    request.metadata().get("authorization").cloned()
}

impl EmailApi {
    /// Whether the caller may read this dossier's mail: the dossier role
    /// decides (restricted processes, audited reads), asked with the
    /// caller's own token. Messages not yet placed in a dossier are the
    /// unified queue's, readable by every agent.
    async fn may_read(&self, auth: &Bearer, dossier_id: &str) -> Result<bool, Status> {
        if dossier_id.is_empty() {
            return Ok(true);
        }
        let mut req = Request::new(guichet_proto::dossier::v1::GetDossierRequest {
            id: dossier_id.to_owned(),
        });
        if let Some(a) = auth {
            req.metadata_mut().insert("authorization", a.clone());
        }
        match self.dossier.clone().get_dossier(req).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::PermissionDenied => Ok(false),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(true),
            Err(s) => Err(unavailable("check dossier access", s.message())),
        }
    }

    /// The SHA-256 of every document of the dossier, read with the
    /// caller's own token.
    async fn documents_of(
        &self,
        auth: &Bearer,
        dossier_id: &str,
    ) -> Result<std::collections::HashSet<String>, Status> {
        let mut held = std::collections::HashSet::new();
        let mut page_token = String::new();
        loop {
            let mut req = Request::new(guichet_proto::dossier::v1::ListDocumentsRequest {
                dossier_id: dossier_id.to_owned(),
                page_size: 200,
                page_token: page_token.clone(),
            });
            if let Some(a) = auth {
                req.metadata_mut().insert("authorization", a.clone());
            }
            let page = match self.dossier.clone().list_documents(req).await {
                Ok(p) => p.into_inner(),
                Err(s) if s.code() == tonic::Code::PermissionDenied => return Err(s),
                Err(s) => return Err(unavailable("list the dossier's documents", s.message())),
            };
            held.extend(page.documents.into_iter().map(|d| d.sha256));
            if page.next_page_token.is_empty() {
                return Ok(held);
            }
            page_token = page.next_page_token;
        }
    }

    async fn check_read(&self, auth: &Bearer, dossier_id: &str) -> Result<(), Status> {
        if self.may_read(auth, dossier_id).await? {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "dossier {dossier_id} is restricted: its mail is not shown"
            )))
        }
    }
}

fn parse_name(name: &str) -> Result<&str, Status> {
    name.strip_prefix("emailMessages/")
        .filter(|id| !id.is_empty() && id.len() <= 64 && !id.contains('/'))
        .ok_or_else(|| invalid_argument("name", "must be `emailMessages/{id}`"))
}

#[derive(Default, Debug, PartialEq)]
struct Filter {
    dossier_id: Option<String>,
    direction: Option<&'static str>,
    auto_submitted: Option<bool>,
    bounce: Option<bool>,
}

fn parse_filter(filter: &str) -> Result<Filter, Status> {
    let mut f = Filter::default();
    if filter.trim().is_empty() {
        return Ok(f);
    }
    let boolean = |v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid_argument("filter", "expected true or false")),
    };
    for clause in filter.split(" AND ").flat_map(|c| c.split(" and ")) {
        let (key, value) = clause
            .split_once('=')
            .ok_or_else(|| invalid_argument("filter", "clauses are `key = value` joined by AND"))?;
        let value = value.trim().trim_matches('"');
        match key.trim() {
            "dossier_id" => f.dossier_id = Some(value.to_owned()),
            "direction" => {
                f.direction = Some(match value.trim_start_matches("DIRECTION_") {
                    "IN" => "in",
                    "OUT" => "out",
                    _ => return Err(invalid_argument("filter", "direction is IN or OUT")),
                })
            }
            "auto_submitted" => f.auto_submitted = Some(boolean(value)?),
            "bounce" => f.bounce = Some(boolean(value)?),
            other => {
                return Err(invalid_argument(
                    "filter",
                    format!(
                        "`{other}` cannot be filtered on (dossier_id, direction, auto_submitted, bounce)"
                    ),
                ));
            }
        }
    }
    Ok(f)
}

#[tonic::async_trait]
impl pb::email_service_server::EmailService for EmailApi {
    #[tracing::instrument(skip_all, fields(dossier_id = tracing::field::Empty))]
    async fn send_reply(
        &self,
        request: Request<pb::SendReplyRequest>,
    ) -> Result<Response<pb::EmailMessage>, Status> {
        let caller = auth::caller(&request)?;
        let auth = bearer(&request);
        let req = request.into_inner();
        tracing::Span::current().record("dossier_id", req.dossier_id.as_str());
        if req.dossier_id.trim().is_empty() || req.dossier_id.len() > 64 {
            return Err(invalid_argument("dossier_id", "is required"));
        }
        if req.text.trim().is_empty() {
            return Err(invalid_argument("text", "is empty"));
        }
        if req.text.chars().count() > MAX_REPLY_CHARS {
            return Err(invalid_argument(
                "text",
                format!("is longer than {MAX_REPLY_CHARS} characters"),
            ));
        }
        if req.request_id.trim().is_empty() || req.request_id.len() > 128 {
            return Err(invalid_argument(
                "request_id",
                "is required (at most 128 characters)",
            ));
        }
        for (i, a) in req.attachments.iter().enumerate() {
            let ok = a.sha256.len() == 64 && a.sha256.chars().all(|c| c.is_ascii_hexdigit());
            if !ok {
                return Err(invalid_argument(
                    &format!("attachments[{i}].sha256"),
                    "is not a SHA-256",
                ));
            }
            if !self
                .objects
                .exists(&a.sha256.to_ascii_lowercase())
                .await
                .map_err(internal_err("check attachment"))?
            {
                return Err(invalid_argument(
                    &format!("attachments[{i}].sha256"),
                    "is not in the object store",
                ));
            }
        }
        self.check_read(&auth, &req.dossier_id).await?;
        // Only the dossier's own documents leave with an answer: a hash seen
        // in a listing or an event is not a right to the content.
        if !req.attachments.is_empty() {
            let held = self.documents_of(&auth, &req.dossier_id).await?;
            for (i, a) in req.attachments.iter().enumerate() {
                if !held.contains(&a.sha256.to_ascii_lowercase()) {
                    return Err(Status::permission_denied(format!(
                        "attachments[{i}].sha256: not a document of dossier {}",
                        req.dossier_id
                    )));
                }
            }
        }
        let request_id = format!("reply:{}", req.request_id);
        let known = email_message::Entity::find()
            .filter(email_message::Column::RequestId.eq(request_id.clone()))
            .one(&self.db)
            .await
            .map_err(internal_err("find reply"))?;
        if let Some(m) = known {
            return Ok(Response::new(message_pb(&m)));
        }
        let last = self
            .last_of_dossier(&req.dossier_id)
            .await
            .map_err(internal_err("find thread"))?
            .ok_or_else(|| {
                failed_precondition(
                    "EMAIL_THREAD",
                    &format!("dossiers/{}", req.dossier_id),
                    "ce dossier n'a reçu aucun courriel : il n'y a pas de fil auquel répondre",
                )
            })?;
        let citizen = email_message::Entity::find()
            .filter(email_message::Column::DossierId.eq(req.dossier_id.clone()))
            .filter(email_message::Column::Direction.eq("in"))
            .filter(email_message::Column::AutoSubmitted.eq(false))
            .order_by_desc(email_message::Column::CreatedAt)
            .one(&self.db)
            .await
            .map_err(internal_err("find thread"))?
            .ok_or_else(|| {
                failed_precondition(
                    "EMAIL_THREAD",
                    &format!("dossiers/{}", req.dossier_id),
                    "aucun courriel de l'usager dans ce dossier : pas d'adresse à laquelle répondre",
                )
            })?;
        let reference = last.dossier_reference.clone();
        let base = crate::text::base_subject(&citizen.subject);
        let base = if base.is_empty() {
            "Votre demande".to_owned()
        } else {
            base
        };
        let subject = if reference.is_empty() || base.contains(&reference) {
            format!("Re: {base}")
        } else {
            format!("Re: {base} [{reference}]")
        };
        let mut variables = HashMap::new();
        variables.insert("text".to_owned(), req.text.clone());
        variables.insert("subject".to_owned(), subject.clone());
        variables.insert("reference".to_owned(), reference.clone());
        let txn = self.db.begin().await.map_err(internal_err("send reply"))?;
        let staged = self
            .stage_outbound(
                &txn,
                Outbound {
                    request_id,
                    source: "reply",
                    to: citizen.from_address.clone(),
                    answered: &last,
                    subject,
                    reference,
                    dossier_id: req.dossier_id.clone(),
                    template: REPLY_TEMPLATE,
                    variables,
                    auto_submitted: "no",
                    text: req.text.clone(),
                    attachments: req
                        .attachments
                        .iter()
                        .map(|a| Attachment {
                            filename: crate::mime::clean_filename(&a.filename),
                            media_type: a.media_type.clone(),
                            sha256: a.sha256.to_ascii_lowercase(),
                            content: Vec::new(),
                        })
                        .collect(),
                    requested_by: caller.subject.clone(),
                },
            )
            .await;
        let (model, staged) = match staged {
            Ok(x) => x,
            Err(e) if is_unique_violation(&e) => {
                drop(txn);
                let m = email_message::Entity::find()
                    .filter(
                        email_message::Column::RequestId.eq(format!("reply:{}", req.request_id)),
                    )
                    .one(&self.db)
                    .await
                    .map_err(internal_err("find reply"))?
                    .ok_or_else(|| Status::aborted("concurrent reply, retry"))?;
                return Ok(Response::new(message_pb(&m)));
            }
            Err(e) => return Err(internal_err("send reply")(e)),
        };
        txn.commit().await.map_err(internal_err("send reply"))?;
        if let Err(e) = self.outbox.publish_now(&staged).await {
            tracing::warn!(error = %e, "reply staged, the relay will publish it");
            self.outbox.notify();
        }
        metrics::counter!("guichet_email_replies_total").increment(1);
        tracing::info!(email_message = %model.id, notification_id = %model.notification_id, by = %caller.subject, "agent reply staged");
        Ok(Response::new(message_pb(&model)))
    }

    async fn get_email_message(
        &self,
        request: Request<pb::GetEmailMessageRequest>,
    ) -> Result<Response<pb::EmailMessage>, Status> {
        let auth = bearer(&request);
        let req = request.into_inner();
        let id = parse_name(&req.name)?;
        let m = email_message::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(internal_err("get email message"))?
            .ok_or_else(|| not_found("emailMessages", &req.name))?;
        self.check_read(&auth, &m.dossier_id).await?;
        // A message not threaded to a dossier follows the dossier its
        // request went to.
        if m.dossier_id.is_empty()
            && let Some(event) = m.intake_event_id.clone()
            && !guichet_platform::placement::hidden_requests(
                &self.dossier,
                auth.as_ref(),
                vec![event],
            )
            .await?
            .is_empty()
        {
            return Err(Status::permission_denied(
                "this message went to a restricted dossier: it is not shown",
            ));
        }
        Ok(Response::new(message_pb(&m)))
    }

    async fn list_email_messages(
        &self,
        request: Request<pb::ListEmailMessagesRequest>,
    ) -> Result<Response<pb::ListEmailMessagesResponse>, Status> {
        let auth = bearer(&request);
        let req = request.into_inner();
        let limit = page_size(req.page_size, 50, 500)?;
        let f = parse_filter(&req.filter)?;
        let mut q = email_message::Entity::find();
        if let Some(d) = f.dossier_id {
            q = q.filter(email_message::Column::DossierId.eq(d));
        }
        if let Some(d) = f.direction {
            q = q.filter(email_message::Column::Direction.eq(d));
        }
        if let Some(a) = f.auto_submitted {
            q = q.filter(email_message::Column::AutoSubmitted.eq(a));
        }
        if let Some(b) = f.bounce {
            q = q.filter(email_message::Column::Bounce.eq(b));
        }
        if !req.page_token.is_empty() {
            if req.page_token.len() > 64 {
                return Err(invalid_argument(
                    "page_token",
                    "is not a token this API issued",
                ));
            }
            q = q.filter(email_message::Column::Id.lt(req.page_token.as_str()));
        }
        let rows = q
            .order_by_desc(email_message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(internal_err("list email messages"))?;
        let next_page_token = if rows.len() as u64 == limit {
            rows.last().map(|m| m.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        // Messages of dossiers the caller may not read are left out: the
        // thread's dossier, else the one the message's request went to.
        let mut allowed = std::collections::HashMap::new();
        for m in &rows {
            if !allowed.contains_key(&m.dossier_id) {
                let ok = self.may_read(&auth, &m.dossier_id).await?;
                allowed.insert(m.dossier_id.clone(), ok);
            }
        }
        let hidden = guichet_platform::placement::hidden_requests(
            &self.dossier,
            auth.as_ref(),
            rows.iter()
                .filter(|m| m.dossier_id.is_empty())
                .filter_map(|m| m.intake_event_id.clone())
                .collect(),
        )
        .await?;
        Ok(Response::new(pb::ListEmailMessagesResponse {
            email_messages: rows
                .iter()
                .filter(|m| allowed.get(&m.dossier_id).copied().unwrap_or(false))
                .filter(|m| {
                    m.intake_event_id
                        .as_ref()
                        .is_none_or(|e| !hidden.contains(e))
                })
                .map(message_pb)
                .collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_filters_parse() {
        let f = parse_filter("dossier_id = \"d1\" AND direction = OUT AND bounce = false").unwrap();
        assert_eq!(f.dossier_id.as_deref(), Some("d1"));
        assert_eq!(f.direction, Some("out"));
        assert_eq!(f.bounce, Some(false));
        assert!(parse_filter("colour = red").is_err());
        assert!(parse_name("emailMessages/abc").is_ok());
        assert!(parse_name("scanFiles/abc").is_err());
    }
}
