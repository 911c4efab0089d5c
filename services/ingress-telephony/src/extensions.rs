//! The PBX users and extensions mapped to guichet agents, edited by an
//! admin (`SetExtension`, the portal's page). A call ringing at a mapped
//! user pops the caller's fiche on that agent's open portal page
//! (`call_ringing`, `call_answered` events: a call id and agent ids, never
//! a number); an answered call's request is assigned to the mapped agent.

use chrono::{DateTime, Utc};
use guichet_platform::outbox::Staged;
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1::{CallAnswered, CallRinging};
use guichet_proto::telephony::v1 as pb;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::TelephonyApi;
use crate::db::entities::extension;

pub(crate) fn extension_pb(e: extension::Model) -> pb::Extension {
    pb::Extension {
        extension: e.extension,
        agent_id: e.agent_id,
        update_time: Some(timestamp(e.update_time)),
        updated_by: e.updated_by,
    }
}

/// A PBX user name or extension: printable, at most 100 characters.
pub(crate) fn valid_extension(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 100 && !s.chars().any(char::is_control)
}

impl TelephonyApi {
    /// The agents mapped to `users` (in their order, once each).
    pub(crate) async fn agents_of(&self, users: &[String]) -> Result<Vec<String>, sea_orm::DbErr> {
        let wanted: Vec<String> = users
            .iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let rows = extension::Entity::find()
            .filter(extension::Column::Extension.is_in(wanted.clone()))
            .all(&self.db)
            .await?;
        let mut agents = Vec::new();
        for u in &wanted {
            if let Some(r) = rows.iter().find(|r| &r.extension == u)
                && !agents.contains(&r.agent_id)
            {
                agents.push(r.agent_id.clone());
            }
        }
        Ok(agents)
    }

    pub(crate) fn ringing_event(
        &self,
        call_id: &str,
        agents: &[String],
        at: DateTime<Utc>,
    ) -> Staged {
        let mut staged = self.outbox.domain_event(
            "telephony",
            "call_ringing",
            format!("calls/{call_id}"),
            &CallRinging {
                call_id: call_id.to_owned(),
                agent_ids: agents.to_vec(),
                started_at: Some(timestamp(at)),
            },
        );
        staged.event.time = at;
        staged
    }

    pub(crate) fn answered_event(&self, call_id: &str, agent: &str, at: DateTime<Utc>) -> Staged {
        let mut staged = self.outbox.domain_event(
            "telephony",
            "call_answered",
            format!("calls/{call_id}"),
            &CallAnswered {
                call_id: call_id.to_owned(),
                agent_id: agent.to_owned(),
                answered_at: Some(timestamp(at)),
            },
        );
        staged.event.time = at;
        staged
    }

    /// The calls that began in `[start, end)`, newest first.
    pub(crate) async fn calls_between(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        missed_only: bool,
        limit: u64,
    ) -> Result<Vec<crate::db::entities::call::Model>, sea_orm::DbErr> {
        use crate::db::entities::call;
        use sea_orm::QuerySelect;
        let mut q = call::Entity::find()
            .filter(call::Column::StartedAt.gte(start))
            .filter(call::Column::StartedAt.lt(end));
        if missed_only {
            q = q.filter(
                sea_orm::Condition::any()
                    .add(call::Column::Missed.eq(true))
                    .add(call::Column::Voicemail.eq(true))
                    .add(call::Column::CallbackRequested.eq(true)),
            );
        }
        q.order_by_desc(call::Column::StartedAt)
            .limit(limit)
            .all(&self.db)
            .await
    }

    pub(crate) async fn list_extensions(&self) -> Result<Vec<extension::Model>, sea_orm::DbErr> {
        extension::Entity::find()
            .order_by_asc(extension::Column::Extension)
            .all(&self.db)
            .await
    }

    pub(crate) async fn set_extension(
        &self,
        ext: &str,
        agent: &str,
        by: &str,
    ) -> Result<extension::Model, sea_orm::DbErr> {
        let row = extension::ActiveModel {
            extension: Set(ext.to_owned()),
            agent_id: Set(agent.to_owned()),
            updated_by: Set(by.to_owned()),
            update_time: Set(self.clock.now()),
        };
        extension::Entity::insert(row)
            .on_conflict(
                OnConflict::column(extension::Column::Extension)
                    .update_columns([
                        extension::Column::AgentId,
                        extension::Column::UpdatedBy,
                        extension::Column::UpdateTime,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        extension::Entity::find_by_id(ext.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound(ext.to_owned()))
    }

    pub(crate) async fn delete_extension(&self, ext: &str) -> Result<bool, sea_orm::DbErr> {
        extension::Entity::delete_by_id(ext.to_owned())
            .exec(&self.db)
            .await
            .map(|r| r.rows_affected > 0)
    }
}
