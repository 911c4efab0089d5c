//! What agents and other roles attach to a dossier: notes, documents,
//! links to appointments and signatures, the holder, legal holds; and the
//! supervisor's tools: reopening and version migration.

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use guichet_proto::events::v1 as ev;
use sea_orm::ExprTrait;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};

use crate::catalog::ProcessDefinition;
use crate::db::entities::{document, dossier, link, party, timeline};
use crate::engine::{Change, TransitionError};
use crate::store::{Conn, NewEntry, Store, insert_entry};

/// A document to attach.
pub struct NewDocument {
    pub dossier: dossier::Model,
    pub sha256: String,
    pub media_type: String,
    pub size_bytes: u64,
    pub filename: String,
    pub document_type: String,
    pub source_channel: String,
    pub actor: String,
}

impl Store {
    async fn stage_update(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        dossier_id: &str,
        what: &str,
        actor: &str,
    ) -> Result<(), DbErr> {
        let event = self.outbox().domain_event(
            "dossier",
            "dossier_updated",
            format!("dossiers/{dossier_id}"),
            &ev::DossierUpdated {
                dossier_id: dossier_id.to_owned(),
                what: what.to_owned(),
                actor: actor.to_owned(),
                occur_time: Some(guichet_proto::convert::timestamp(self.now())),
            },
        );
        self.outbox().stage(conn, &event).await?;
        self.audit_in(
            conn,
            actor,
            &format!("dossier.{what}"),
            &format!("dossiers/{dossier_id}"),
            "",
        )
        .await
    }

    /// Bump the revision and update time (a change other than a transition).
    async fn touch(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        dossier_id: &str,
    ) -> Result<(), DbErr> {
        dossier::Entity::update_many()
            .col_expr(
                dossier::Column::Revision,
                Expr::col(dossier::Column::Revision).add(1),
            )
            .col_expr(dossier::Column::UpdatedAt, Expr::value(self.now()))
            .filter(dossier::Column::Id.eq(dossier_id))
            .exec(conn)
            .await?;
        Ok(())
    }

    pub async fn add_note(
        &self,
        d: &dossier::Model,
        visibility: &str,
        text: &str,
        actor: &str,
        request_id: Option<&str>,
    ) -> Result<timeline::Model, DbErr> {
        if let Some(rid) = request_id
            && let Some(e) = timeline::Entity::find()
                .filter(timeline::Column::SourceEventId.eq(format!("note:{rid}")))
                .one(self.db())
                .await?
        {
            return Ok(e);
        }
        let txn = self.db().begin().await?;
        let e = insert_entry(
            &txn,
            NewEntry {
                citizen_id: d.citizen_id.clone(),
                dossier_id: Some(d.id.clone()),
                kind: "note".into(),
                channel: "unspecified".into(),
                occurred_at: self.now(),
                summary: text.to_owned(),
                actor: actor.to_owned(),
                source_event_id: request_id.map(|r| format!("note:{r}")),
            },
            visibility,
        )
        .await?;
        self.touch(&txn, &d.id).await?;
        self.stage_update(&txn, &d.id, "note", actor).await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(e)
    }

    pub async fn add_document(&self, n: NewDocument) -> Result<document::Model, DbErr> {
        self.add_document_in(self.db(), n).await
    }

    /// [`Store::add_document`] inside the caller's transaction.
    pub async fn add_document_in(
        &self,
        conn: &impl Conn,
        n: NewDocument,
    ) -> Result<document::Model, DbErr> {
        let txn = conn.begin().await?;
        let now = self.now();
        let m = document::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            dossier_id: Set(n.dossier.id.clone()),
            citizen_id: Set(n.dossier.citizen_id.clone()),
            sha256: Set(n.sha256),
            media_type: Set(n.media_type),
            size_bytes: Set(n.size_bytes as i64),
            filename: Set(n.filename.clone()),
            document_type: Set(n.document_type.clone()),
            source_channel: Set(n.source_channel.clone()),
            actor: Set(n.actor.clone()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let title = self
            .catalog()
            .get(&n.dossier.process_id, n.dossier.process_version as u32)
            .and_then(|p| p.document(&n.document_type).map(|d| d.title.clone()));
        let summary = match title {
            Some(t) => format!("Pièce reçue : {t}"),
            None => format!("Document ajouté : {}", n.filename),
        };
        insert_entry(
            &txn,
            NewEntry {
                citizen_id: n.dossier.citizen_id.clone(),
                dossier_id: Some(n.dossier.id.clone()),
                kind: "document".into(),
                channel: n.source_channel,
                occurred_at: now,
                summary,
                actor: n.actor.clone(),
                source_event_id: Some(format!("document:{}", m.id)),
            },
            "",
        )
        .await?;
        self.touch(&txn, &n.dossier.id).await?;
        self.stage_update(&txn, &n.dossier.id, "document", &n.actor)
            .await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(m)
    }

    pub async fn get_document(&self, id: &str) -> Result<Option<document::Model>, DbErr> {
        document::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await
    }

    /// The dossiers holding a document with this content, oldest first.
    pub async fn dossiers_holding(&self, sha256: &str) -> Result<Vec<dossier::Model>, DbErr> {
        let ids: Vec<String> = document::Entity::find()
            .filter(document::Column::Sha256.eq(sha256))
            .all(self.db())
            .await?
            .into_iter()
            .map(|d| d.dossier_id)
            .collect();
        if ids.is_empty() {
            return Ok(vec![]);
        }
        dossier::Entity::find()
            .filter(dossier::Column::Id.is_in(ids))
            .order_by_asc(dossier::Column::CreatedAt)
            .all(self.db())
            .await
    }

    pub async fn list_documents(
        &self,
        dossier_id: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<document::Model>, DbErr> {
        let mut q = document::Entity::find()
            .filter(document::Column::DossierId.eq(dossier_id))
            .order_by_asc(document::Column::Id)
            .limit(limit);
        if let Some(a) = after {
            q = q.filter(document::Column::Id.gt(a));
        }
        q.all(self.db()).await
    }

    pub async fn links(&self, dossier_id: &str) -> Result<Vec<link::Model>, DbErr> {
        link::Entity::find()
            .filter(link::Column::DossierId.eq(dossier_id))
            .order_by_asc(link::Column::CreatedAt)
            .all(self.db())
            .await
    }

    /// Create or update a link; idempotent on (dossier, kind, ref_id, status).
    pub async fn link(
        &self,
        d: &dossier::Model,
        kind: &str,
        ref_id: &str,
        status: &str,
        actor: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<link::Model, DbErr> {
        let existing = link::Entity::find()
            .filter(link::Column::DossierId.eq(d.id.clone()))
            .filter(link::Column::Kind.eq(kind))
            .filter(link::Column::RefId.eq(ref_id))
            .one(self.db())
            .await?;
        // A booking moved again is news each time: keyed by when it moved
        // (the owning role's time), so a retried call records it once.
        let moved = (status == "rescheduled").then(|| at.unwrap_or_else(|| self.now()));
        if let (Some(l), Some(at)) = (&existing, moved) {
            let source = format!("link:{}:rescheduled:{}", l.id, at.timestamp_micros());
            let seen = timeline::Entity::find()
                .filter(timeline::Column::SourceEventId.eq(source))
                .one(self.db())
                .await?;
            if seen.is_some() {
                return Ok(l.clone());
            }
        } else if let Some(l) = &existing
            && l.status == status
        {
            return Ok(l.clone());
        }
        let now = self.now();
        let txn = self.db().begin().await?;
        let m = match existing {
            Some(l) => {
                let mut am: link::ActiveModel = l.into();
                am.status = Set(status.to_owned());
                am.updated_at = Set(now);
                am.update(&txn).await?
            }
            None => {
                link::ActiveModel {
                    id: Set(uuid::Uuid::now_v7().to_string()),
                    dossier_id: Set(d.id.clone()),
                    kind: Set(kind.to_owned()),
                    ref_id: Set(ref_id.to_owned()),
                    status: Set(status.to_owned()),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await?
            }
        };
        let (entry_kind, what) = match kind {
            "appointment" => ("appointment", "Rendez-vous"),
            _ => ("signature", "Signature"),
        };
        insert_entry(
            &txn,
            NewEntry {
                citizen_id: d.citizen_id.clone(),
                dossier_id: Some(d.id.clone()),
                kind: entry_kind.into(),
                channel: "unspecified".into(),
                occurred_at: now,
                summary: format!("{what} : {}", status_fr(status)),
                actor: actor.to_owned(),
                source_event_id: Some(match moved {
                    Some(at) => format!("link:{}:rescheduled:{}", m.id, at.timestamp_micros()),
                    None => format!("link:{}:{}:{status}", m.id, m.updated_at.timestamp_micros()),
                }),
            },
            "",
        )
        .await?;
        self.touch(&txn, &d.id).await?;
        self.stage_update(&txn, &d.id, "link", actor).await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(m)
    }

    pub async fn set_holder(
        &self,
        d: &dossier::Model,
        agent: Option<&str>,
        department: Option<&str>,
        actor: &str,
    ) -> Result<(), DbErr> {
        let txn = self.db().begin().await?;
        let mut q = dossier::Entity::update_many()
            .col_expr(dossier::Column::UpdatedAt, Expr::value(self.now()));
        if let Some(a) = agent {
            q = q.col_expr(dossier::Column::HolderAgent, Expr::value(a));
        }
        if let Some(dep) = department {
            q = q.col_expr(dossier::Column::HolderDepartment, Expr::value(dep));
        }
        q.filter(dossier::Column::Id.eq(d.id.clone()))
            .exec(&txn)
            .await?;
        self.touch(&txn, &d.id).await?;
        self.stage_update(&txn, &d.id, "holder", actor).await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(())
    }

    /// Other citizens concerned by a dossier, oldest first.
    /// Other citizens concerned by each of `dossier_ids`, oldest first.
    pub async fn other_citizens_of(
        &self,
        dossier_ids: &[String],
    ) -> Result<HashMap<String, Vec<String>>, DbErr> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for p in party::Entity::find()
            .filter(party::Column::DossierId.is_in(dossier_ids.to_vec()))
            .order_by_asc(party::Column::Id)
            .all(self.db())
            .await?
        {
            out.entry(p.dossier_id).or_default().push(p.citizen_id);
        }
        Ok(out)
    }

    /// Links of each of `dossier_ids`, oldest first.
    pub async fn links_of(
        &self,
        dossier_ids: &[String],
    ) -> Result<HashMap<String, Vec<link::Model>>, DbErr> {
        let mut out: HashMap<String, Vec<link::Model>> = HashMap::new();
        for l in link::Entity::find()
            .filter(link::Column::DossierId.is_in(dossier_ids.to_vec()))
            .order_by_asc(link::Column::CreatedAt)
            .all(self.db())
            .await?
        {
            out.entry(l.dossier_id.clone()).or_default().push(l);
        }
        Ok(out)
    }

    /// Replace the other citizens concerned by a dossier.
    pub async fn set_other_citizens(
        &self,
        d: &dossier::Model,
        citizen_ids: &[String],
        actor: &str,
    ) -> Result<(), DbErr> {
        let txn = self.db().begin().await?;
        party::Entity::delete_many()
            .filter(party::Column::DossierId.eq(d.id.clone()))
            .exec(&txn)
            .await?;
        for c in citizen_ids {
            party::ActiveModel {
                id: Set(uuid::Uuid::now_v7().to_string()),
                dossier_id: Set(d.id.clone()),
                citizen_id: Set(c.clone()),
                created_at: Set(self.now()),
            }
            .insert(&txn)
            .await?;
        }
        self.touch(&txn, &d.id).await?;
        self.stage_update(&txn, &d.id, "citizens", actor).await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(())
    }

    pub async fn set_legal_hold(
        &self,
        d: &dossier::Model,
        hold: bool,
        reason: &str,
        actor: &str,
    ) -> Result<(), DbErr> {
        let txn = self.db().begin().await?;
        dossier::Entity::update_many()
            .col_expr(dossier::Column::LegalHold, Expr::value(hold))
            .col_expr(dossier::Column::LegalHoldReason, Expr::value(reason))
            .filter(dossier::Column::Id.eq(d.id.clone()))
            .exec(&txn)
            .await?;
        self.touch(&txn, &d.id).await?;
        self.stage_update(&txn, &d.id, "legal_hold", actor).await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(())
    }

    /// Move every open dossier of `from` to `to` with `mapping` (old state →
    /// new state). The caller has checked the mapping covers every state in
    /// use. Each dossier moves in its own transaction (a concurrent change
    /// on one dossier is retried once, then reported).
    pub async fn migrate(
        &self,
        dossiers: &[dossier::Model],
        to: &ProcessDefinition,
        mapping: &std::collections::HashMap<String, String>,
        actor: &str,
    ) -> Result<Vec<(dossier::Model, String)>, TransitionError> {
        let mut done = Vec::new();
        for d in dossiers {
            let mut current = d.clone();
            for attempt in 0..2 {
                let target = mapping.get(&current.state).cloned().unwrap_or_default();
                match self
                    .apply_transition(Change {
                        dossier: &current,
                        def: to,
                        to_state: &target,
                        cause: "migration",
                        actor,
                        reason: "",
                        request_id: None,
                    })
                    .await
                {
                    Ok(m) => {
                        done.push((m, current.state.clone()));
                        break;
                    }
                    Err(TransitionError::Conflict) if attempt == 0 => {
                        match self.get_dossier(&d.id).await? {
                            Some(fresh) if fresh.process_version == d.process_version => {
                                current = fresh
                            }
                            _ => break,
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }
}

fn status_fr(status: &str) -> &str {
    match status {
        "booked" => "réservé",
        "rescheduled" => "déplacé à un autre créneau",
        "confirmed" => "confirmé",
        "cancelled" => "annulé",
        "checked_in" => "usager arrivé",
        "done" => "honoré",
        "no_show" => "usager absent",
        "pending" => "en attente",
        "sent" => "code envoyé",
        "signed" => "signé",
        "expired" => "expiré",
        "refused" => "refusé",
        other => other,
    }
}
