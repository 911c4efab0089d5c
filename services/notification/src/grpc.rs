//! NotificationService: agents and supervisors follow deliveries;
//! supervisors (and other roles, with a service token) retry a failed
//! message or lift a suppression. Recipients are masked; bodies are never
//! returned.

use std::collections::HashMap;

use guichet_platform::auth;
use guichet_platform::contact::Email;
use guichet_platform::grpc::{
    failed_precondition, internal_err, invalid_argument, not_found, page_size,
};
use guichet_proto::convert::timestamp;
use guichet_proto::notification::v1 as pb;
use tonic::{Request, Response, Status};

use crate::core::{Core, STATUSES, mask};
use crate::db::entities::notification;

#[derive(Clone)]
pub struct NotificationApi {
    pub core: Core,
}

pub fn to_pb(m: notification::Model) -> pb::Notification {
    pb::Notification {
        recipient_masked: mask(&m.recipient),
        id: m.id,
        channel: m.channel,
        status: m.status,
        template: m.template,
        dossier_id: m.dossier_id,
        attempts: m.attempts.max(0) as u32,
        last_error: m.last_error.unwrap_or_default(),
        provider_message_id: m.provider_message_id.unwrap_or_default(),
        requested_by: m.requested_by,
        create_time: Some(timestamp(m.created_at)),
        update_time: Some(timestamp(m.updated_at)),
        next_attempt_time: m.next_attempt_at.map(timestamp),
        sent_time: m.sent_at.map(timestamp),
        not_after: m.not_after.map(timestamp),
        segments: m.segments.max(0) as u32,
        encoding: m.encoding,
        message_id: m.message_id.unwrap_or_default(),
    }
}

/// `status=failed channel=sms` (also joined by ` AND `).
pub fn parse_filter(filter: &str) -> Result<HashMap<String, String>, Status> {
    let mut out = HashMap::new();
    let normalised = filter.replace(" AND ", " ").replace(" and ", " ");
    for term in normalised.split_whitespace() {
        let (k, v) = term
            .split_once('=')
            .ok_or_else(|| invalid_argument("filter", format!("`{term}` is not key=value")))?;
        let v = v.trim_matches('"').to_owned();
        match k {
            "status" if !STATUSES.contains(&v.as_str()) => {
                return Err(invalid_argument(
                    "filter",
                    format!("unknown status `{v}` (one of {})", STATUSES.join(", ")),
                ));
            }
            "channel" if v != "sms" && v != "email" => {
                return Err(invalid_argument("filter", "channel is sms or email"));
            }
            "status" | "channel" | "dossier_id" | "template" => {}
            other => {
                return Err(invalid_argument(
                    "filter",
                    format!("unknown key `{other}` (status, channel, dossier_id, template)"),
                ));
            }
        }
        out.insert(k.to_owned(), v);
    }
    Ok(out)
}

fn encode_token(t: chrono::DateTime<chrono::Utc>, id: &str) -> String {
    format!("{}|{id}", t.timestamp_micros())
}

fn decode_token(s: &str) -> Result<Option<(chrono::DateTime<chrono::Utc>, String)>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || invalid_argument("page_token", "not a token from a previous page");
    let (t, id) = s.split_once('|').ok_or_else(bad)?;
    let micros: i64 = t.parse().map_err(|_| bad())?;
    let t = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok(Some((t, id.to_owned())))
}

#[tonic::async_trait]
impl pb::notification_service_server::NotificationService for NotificationApi {
    async fn get_notification(
        &self,
        req: Request<pb::GetNotificationRequest>,
    ) -> Result<Response<pb::Notification>, Status> {
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(invalid_argument("id", "is required"));
        }
        let m = self
            .core
            .get(&id)
            .await
            .map_err(internal_err("get notification"))?
            .ok_or_else(|| not_found("notification", &id))?;
        Ok(Response::new(to_pb(m)))
    }

    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let r = req.into_inner();
        let size = page_size(r.page_size, 50, 500)?;
        let filter = parse_filter(&r.filter)?;
        let after = decode_token(&r.page_token)?;
        let mut rows = self
            .core
            .list(&filter, after, size + 1)
            .await
            .map_err(internal_err("list notifications"))?;
        let next_page_token = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last()
                .map(|m| encode_token(m.created_at, &m.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    async fn retry_notification(
        &self,
        req: Request<pb::RetryNotificationRequest>,
    ) -> Result<Response<pb::Notification>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(invalid_argument("id", "is required"));
        }
        match self
            .core
            .retry(&id)
            .await
            .map_err(internal_err("retry notification"))?
        {
            Ok(m) => {
                tracing::info!(notification_id = %id, actor = %who.subject, "notification retry requested");
                Ok(Response::new(to_pb(m)))
            }
            Err(reason) if reason == "not found" => Err(not_found("notification", &id)),
            Err(reason) => Err(failed_precondition("STATUS", &id, reason)),
        }
    }

    async fn clear_suppression(
        &self,
        req: Request<pb::ClearSuppressionRequest>,
    ) -> Result<Response<pb::ClearSuppressionResponse>, Status> {
        let who = auth::caller(&req)?;
        let address =
            Email::parse(&req.into_inner().address).map_err(|e| invalid_argument("address", e))?;
        let cleared = self
            .core
            .clear_suppression(address.as_str())
            .await
            .map_err(internal_err("clear suppression"))?;
        tracing::info!(actor = %who.subject, cleared, "suppression cleared by request");
        Ok(Response::new(pb::ClearSuppressionResponse { cleared }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_templates(
        &self,
        req: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        crate::wording::list(&self.core, req).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_template(
        &self,
        req: Request<pb::GetTemplateRequest>,
    ) -> Result<Response<pb::MessageTemplate>, Status> {
        crate::wording::get(&self.core, req).await
    }

    #[tracing::instrument(skip_all)]
    async fn update_template(
        &self,
        req: Request<pb::UpdateTemplateRequest>,
    ) -> Result<Response<pb::MessageTemplate>, Status> {
        crate::wording::update(&self.core, req).await
    }

    #[tracing::instrument(skip_all)]
    async fn reset_template(
        &self,
        req: Request<pb::ResetTemplateRequest>,
    ) -> Result<Response<pb::MessageTemplate>, Status> {
        crate::wording::reset(&self.core, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_unknown_keys() {
        let f = parse_filter("status=dead_lettered AND channel=sms").expect("parses");
        assert_eq!(f.get("status").map(String::as_str), Some("dead_lettered"));
        assert_eq!(f.get("channel").map(String::as_str), Some("sms"));
        assert!(parse_filter("status=lost").is_err());
        assert!(parse_filter("phone=+33").is_err());
        assert!(parse_filter("").expect("empty").is_empty());
    }

    #[test]
    fn page_tokens_round_trip() {
        let t = chrono::Utc::now();
        let tok = encode_token(t, "n-1");
        let (t2, id) = decode_token(&tok).expect("ok").expect("some");
        assert_eq!(t2.timestamp_micros(), t.timestamp_micros());
        assert_eq!(id, "n-1");
        assert!(decode_token("zzz").is_err());
    }
}
