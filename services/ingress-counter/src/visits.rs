//! The desk side of a visit: call next, recall, start, finish, no-show,
//! transfer. Each step is one conditional update on the ticket's status
//! (`… WHERE id = ? AND status = ?`), so concurrent desks or replicas can
//! never both win the same ticket; a call is staged as a `ticket_called`
//! event in the same transaction.

use chrono::Duration;
use guichet_proto::convert::timestamp;
use guichet_proto::counter::v1 as pb;
use guichet_proto::events::v1::{TicketCalled, VisitEnded};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};

use crate::CounterApi;
use crate::core::secs;
use crate::db::entities::ticket;
use crate::error::{Error, failed_precondition, internal_err, invalid_argument, not_found};
use crate::grpc::ticket_pb;

/// Candidates tried per call: concurrent desks race for the first ones.
const CANDIDATES: u64 = 16;

fn check_name(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.chars().count() > 64 || value.chars().any(char::is_control) {
        return Err(invalid_argument(
            field,
            "must be 1 to 64 printable characters",
        ));
    }
    Ok(())
}

/// A desk's name, as the waiting-room board (public, unauthenticated)
/// shows it: letters, digits, spaces and `- ' . / #` only, never markup.
fn check_desk(value: &str) -> Result<(), Error> {
    check_name("desk", value)?;
    if !value
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '\'' | '.' | '/' | '#' | '°'))
    {
        return Err(invalid_argument(
            "desk",
            "may hold letters, digits, spaces and - ' . / # only",
        ));
    }
    Ok(())
}

impl CounterApi {
    pub(crate) async fn ticket(&self, id: &str) -> Result<ticket::Model, Error> {
        ticket::Entity::find_by_id(id.trim().to_owned())
            .one(&self.db)
            .await
            .map_err(internal_err("get ticket"))?
            .ok_or_else(|| not_found("ticket", id))
    }

    /// Today's tickets of `site` (Paris day): only at `desk` when given,
    /// of `statuses` and `services` when given; waiting ones in calling
    /// order when only those are asked, else the latest called first.
    pub(crate) async fn tickets_of_today(
        &self,
        site: &str,
        desk: &str,
        statuses: &[&str],
        services: &[String],
        limit: u64,
    ) -> Result<Vec<ticket::Model>, Error> {
        let today = crate::paris_day(self.clock.now());
        let mut q = ticket::Entity::find()
            .filter(ticket::Column::Day.eq(today))
            .filter(ticket::Column::Site.eq(site));
        if !desk.is_empty() {
            q = q.filter(ticket::Column::Desk.eq(desk));
        }
        if !statuses.is_empty() {
            q = q.filter(ticket::Column::Status.is_in(statuses.iter().copied()));
        }
        let services: Vec<&str> = services
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if !services.is_empty() {
            q = q.filter(ticket::Column::Service.is_in(services));
        }
        q = if !statuses.is_empty() && statuses.iter().all(|s| *s == "waiting") {
            q.order_by_asc(ticket::Column::RankAt)
        } else {
            q.order_by_desc(ticket::Column::CallTime)
                .order_by_desc(ticket::Column::IssuedAt)
        };
        q.order_by_asc(ticket::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(internal_err("list tickets"))
    }

    fn site_or_default<'a>(&'a self, site: &'a str) -> &'a str {
        if site.trim().is_empty() {
            &self.config.default_site
        } else {
            site.trim()
        }
    }

    /// Call the next ticket to `req.desk` for `agent` (the caller).
    pub(crate) async fn call_next_ticket(
        &self,
        req: pb::CallNextRequest,
        agent: &str,
    ) -> Result<pb::Ticket, Error> {
        let desk = req.desk.trim();
        check_desk(desk)?;
        let site = self.site_or_default(&req.site).to_owned();
        let mut services: Vec<String> = req
            .services
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        for s in &services {
            if !self.config.services.contains_key(s) {
                return Err(invalid_argument(
                    "services",
                    format!("`{s}` is not a counter service"),
                ));
            }
        }
        if services.is_empty() {
            services = self.config.services.keys().cloned().collect();
        }
        loop {
            // Daily reset: yesterday's tickets still waiting are not called.
            let today = crate::paris_day(self.clock.now());
            let candidates = ticket::Entity::find()
                .filter(ticket::Column::Day.eq(today))
                .filter(ticket::Column::Site.eq(site.as_str()))
                .filter(ticket::Column::Status.eq("waiting"))
                .filter(ticket::Column::Service.is_in(services.clone()))
                .order_by_asc(ticket::Column::RankAt)
                .order_by_asc(ticket::Column::Id)
                .limit(CANDIDATES)
                .all(&self.db)
                .await
                .map_err(internal_err("call next"))?;
            if candidates.is_empty() {
                return Err(not_found(
                    "waiting ticket",
                    &format!("{site}/{}", services.join(",")),
                ));
            }
            for c in candidates {
                if let Some(t) = self.try_call(c, desk, agent).await? {
                    metrics::counter!("guichet_counter_calls_total", "service" => t.service.clone())
                        .increment(1);
                    tracing::info!(ticket_id = %t.id, desk, "ticket called");
                    return Ok(ticket_pb(t));
                }
            }
            // Every candidate was taken by another desk meanwhile: look again.
        }
    }

    /// Claim `c` for `desk` if it still waits; stage its board call.
    async fn try_call(
        &self,
        c: ticket::Model,
        desk: &str,
        agent: &str,
    ) -> Result<Option<ticket::Model>, Error> {
        let now = self.clock.now();
        let txn = self.db.begin().await.map_err(internal_err("call next"))?;
        let res = ticket::Entity::update_many()
            .col_expr(ticket::Column::Status, Expr::value("called"))
            .col_expr(ticket::Column::Desk, Expr::value(desk.to_owned()))
            .col_expr(ticket::Column::CallTime, Expr::value(now))
            .col_expr(ticket::Column::AgentId, Expr::value(agent.to_owned()))
            .filter(ticket::Column::Id.eq(c.id.as_str()))
            .filter(ticket::Column::Status.eq("waiting"))
            .exec(&txn)
            .await
            .map_err(internal_err("call next"))?;
        if res.rows_affected == 0 {
            return Ok(None);
        }
        let t = ticket::Model {
            status: "called".into(),
            desk: Some(desk.to_owned()),
            call_time: Some(now),
            agent_id: Some(agent.to_owned()),
            ..c
        };
        let staged = self.board_event(&t, now);
        self.outbox
            .stage(&txn, &staged)
            .await
            .map_err(internal_err("call next"))?;
        txn.commit().await.map_err(internal_err("call next"))?;
        self.publish(&staged).await;
        Ok(Some(t))
    }

    fn board_event(
        &self,
        t: &ticket::Model,
        now: chrono::DateTime<chrono::Utc>,
    ) -> guichet_platform::outbox::Staged {
        let mut staged = self.outbox.domain_event(
            "counter",
            "ticket_called",
            format!("tickets/{}", t.id),
            &TicketCalled {
                ticket_id: t.id.clone(),
                ticket_number: t.number.clone(),
                service: t.service.clone(),
                site: t.site.clone(),
                desk: t.desk.clone().unwrap_or_default(),
                call_time: Some(timestamp(now)),
                recall: u32::try_from(t.recalls).unwrap_or(0),
                agent_id: t.agent_id.clone().unwrap_or_default(),
                intake_event_id: t.intake_event_id.clone(),
            },
        );
        staged.event.time = now;
        staged
    }

    fn visit_ended(
        &self,
        t: &ticket::Model,
        outcome: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> guichet_platform::outbox::Staged {
        let mut staged = self.outbox.domain_event(
            "counter",
            "visit_ended",
            format!("tickets/{}", t.id),
            &VisitEnded {
                ticket_id: t.id.clone(),
                ticket_number: t.number.clone(),
                service: t.service.clone(),
                site: t.site.clone(),
                desk: t.desk.clone().unwrap_or_default(),
                priority: t.priority.clone(),
                outcome: outcome.to_owned(),
                waiting_seconds: t.start_time.map_or(0, |s| secs(t.waiting_since, s)),
                service_seconds: t.start_time.map_or(0, |s| secs(s, now)),
                issued_at: Some(timestamp(t.issued_at)),
                end_time: Some(timestamp(now)),
                recalls: u32::try_from(t.recalls).unwrap_or(0),
                intake_event_id: t.intake_event_id.clone(),
                agent_id: t.agent_id.clone().unwrap_or_default(),
            },
        );
        staged.event.time = now;
        staged
    }

    /// Publish a committed event now; the relay retries it if NATS is away.
    async fn publish(&self, staged: &guichet_platform::outbox::Staged) {
        if let Err(error) = self.outbox.publish_now(staged).await {
            tracing::warn!(%error, "board event left to the outbox relay");
            self.outbox.notify();
        }
    }

    /// Move `id` from one of `from` to a new state with `set`.
    async fn transition(
        &self,
        id: &str,
        from: &[&str],
        what: &str,
        update: impl FnOnce(ticket::Model) -> ticket::Model,
    ) -> Result<(ticket::Model, sea_orm::DatabaseTransaction), Error> {
        let current = self.ticket(id).await?;
        if !from.contains(&current.status.as_str()) {
            return Err(failed_precondition(
                "TICKET_STATUS",
                &format!("tickets/{}", current.id),
                format!(
                    "cannot {what} a ticket that is {} (expected {})",
                    current.status,
                    from.join(" or ")
                ),
            ));
        }
        let old_status = current.status.clone();
        let next = update(current);
        let txn = self.db.begin().await.map_err(internal_err(what))?;
        let res = ticket::Entity::update_many()
            .col_expr(ticket::Column::Status, Expr::value(next.status.clone()))
            .col_expr(ticket::Column::Service, Expr::value(next.service.clone()))
            .col_expr(ticket::Column::Desk, Expr::value(next.desk.clone()))
            .col_expr(ticket::Column::CallTime, Expr::value(next.call_time))
            .col_expr(ticket::Column::StartTime, Expr::value(next.start_time))
            .col_expr(ticket::Column::FinishTime, Expr::value(next.finish_time))
            .col_expr(ticket::Column::NoShowTime, Expr::value(next.no_show_time))
            .col_expr(ticket::Column::Recalls, Expr::value(next.recalls))
            .col_expr(
                ticket::Column::WaitingSince,
                Expr::value(next.waiting_since),
            )
            .col_expr(ticket::Column::RankAt, Expr::value(next.rank_at))
            .col_expr(
                ticket::Column::TransferredFrom,
                Expr::value(next.transferred_from.clone()),
            )
            .filter(ticket::Column::Id.eq(next.id.as_str()))
            .filter(ticket::Column::Status.eq(old_status.as_str()))
            .filter(ticket::Column::Recalls.eq(next.recalls - i32::from(what == "recall")))
            .exec(&txn)
            .await
            .map_err(internal_err(what))?;
        if res.rows_affected == 0 {
            return Err(Error::Conflict(format!(
                "ticket {} changed meanwhile, try again",
                next.id
            )));
        }
        Ok((next, txn))
    }

    pub(crate) async fn recall(&self, id: &str) -> Result<pb::Ticket, Error> {
        let now = self.clock.now();
        let (t, txn) = self
            .transition(id, &["called"], "recall", |t| ticket::Model {
                recalls: t.recalls + 1,
                ..t
            })
            .await?;
        let staged = self.board_event(&t, now);
        self.outbox
            .stage(&txn, &staged)
            .await
            .map_err(internal_err("recall"))?;
        txn.commit().await.map_err(internal_err("recall"))?;
        self.publish(&staged).await;
        tracing::info!(ticket_id = %t.id, recalls = t.recalls, "ticket recalled");
        Ok(ticket_pb(t))
    }

    pub(crate) async fn start(&self, id: &str) -> Result<pb::Ticket, Error> {
        let now = self.clock.now();
        let (t, txn) = self
            .transition(id, &["called"], "start", |t| ticket::Model {
                status: "in_service".into(),
                start_time: Some(now),
                ..t
            })
            .await?;
        txn.commit().await.map_err(internal_err("start"))?;
        metrics::histogram!("guichet_counter_waiting_seconds", "service" => t.service.clone())
            .record(f64::from(secs(t.waiting_since, now)));
        Ok(ticket_pb(t))
    }

    pub(crate) async fn finish(&self, id: &str) -> Result<pb::Ticket, Error> {
        let now = self.clock.now();
        let (t, txn) = self
            .transition(id, &["in_service"], "finish", |t| ticket::Model {
                status: "done".into(),
                finish_time: Some(now),
                ..t
            })
            .await?;
        let ended = self.visit_ended(&t, "done", now);
        self.outbox
            .stage(&txn, &ended)
            .await
            .map_err(internal_err("finish"))?;
        txn.commit().await.map_err(internal_err("finish"))?;
        self.publish(&ended).await;
        if let Some(s) = t.start_time {
            metrics::histogram!("guichet_counter_service_seconds", "service" => t.service.clone())
                .record(f64::from(secs(s, now)));
        }
        Ok(ticket_pb(t))
    }

    pub(crate) async fn no_show(&self, id: &str) -> Result<pb::Ticket, Error> {
        let now = self.clock.now();
        let current = self.ticket(id).await?;
        let needed = i32::try_from(self.config.recalls_before_no_show).unwrap_or(i32::MAX);
        if current.status == "called" && current.recalls < needed {
            return Err(failed_precondition(
                "TICKET_RECALLS",
                &format!("tickets/{}", current.id),
                format!(
                    "recall the ticket {needed} time(s) before marking it a no-show ({} so far)",
                    current.recalls
                ),
            ));
        }
        let (t, txn) = self
            .transition(id, &["called"], "mark a no-show", |t| ticket::Model {
                status: "no_show".into(),
                no_show_time: Some(now),
                ..t
            })
            .await?;
        let ended = self.visit_ended(&t, "no_show", now);
        self.outbox
            .stage(&txn, &ended)
            .await
            .map_err(internal_err("no-show"))?;
        txn.commit().await.map_err(internal_err("no-show"))?;
        self.publish(&ended).await;
        metrics::counter!("guichet_counter_no_shows_total", "service" => t.service.clone())
            .increment(1);
        Ok(ticket_pb(t))
    }

    pub(crate) async fn transfer(&self, id: &str, service: &str) -> Result<pb::Ticket, Error> {
        let service = service.trim();
        if !self.config.services.contains_key(service) {
            return Err(invalid_argument(
                "service",
                format!("`{service}` is not a counter service"),
            ));
        }
        let now = self.clock.now();
        let weights = self.config.priorities.clone();
        let (t, txn) = self
            .transition(id, &["called", "in_service"], "transfer", |t| {
                let weight = weights.get(&t.priority).copied().unwrap_or(0);
                ticket::Model {
                    status: "waiting".into(),
                    transferred_from: Some(t.service.clone()),
                    service: service.to_owned(),
                    desk: None,
                    call_time: None,
                    start_time: None,
                    recalls: 0,
                    waiting_since: now,
                    rank_at: now - Duration::minutes(i64::from(weight)),
                    ..t
                }
            })
            .await?;
        txn.commit().await.map_err(internal_err("transfer"))?;
        tracing::info!(ticket_id = %t.id, "ticket transferred");
        Ok(ticket_pb(t))
    }
}
