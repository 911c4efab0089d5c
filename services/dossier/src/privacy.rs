//! Data protection: retention purge (with legal holds), the right of access
//! (one JSON export) and the right to erasure; and reading the audit log.

use chrono::Duration;
use guichet_proto::events::v1 as ev;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use serde_json::json;

use crate::db::entities::{
    audit, citizen, contact, document, dossier, link, merge, party, timeline, timer, transition,
};
use crate::store::Store;

#[derive(Debug, Default)]
pub struct PurgeReport {
    pub references: Vec<String>,
    pub documents: u32,
    pub held: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Erased {
    pub dossiers: u32,
    pub entries: u32,
    pub documents: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// Dossiers whose retention obligation keeps the data (references).
    #[error("retention obligations apply: {}", .0.join(", "))]
    Retained(Vec<String>),
    #[error("citizen not found")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl Store {
    /// Delete a dossier and everything attached to it, in `txn`; returns the
    /// object-store addresses that may now be unreferenced.
    async fn delete_dossier_in(
        &self,
        txn: &DatabaseTransaction,
        d: &dossier::Model,
    ) -> Result<(Vec<String>, u64), DbErr> {
        let docs = document::Entity::find()
            .filter(document::Column::DossierId.eq(d.id.clone()))
            .all(txn)
            .await?;
        document::Entity::delete_many()
            .filter(document::Column::DossierId.eq(d.id.clone()))
            .exec(txn)
            .await?;
        let entries = timeline::Entity::delete_many()
            .filter(timeline::Column::DossierId.eq(d.id.clone()))
            .exec(txn)
            .await?
            .rows_affected;
        link::Entity::delete_many()
            .filter(link::Column::DossierId.eq(d.id.clone()))
            .exec(txn)
            .await?;
        timer::Entity::delete_many()
            .filter(timer::Column::DossierId.eq(d.id.clone()))
            .exec(txn)
            .await?;
        transition::Entity::delete_many()
            .filter(transition::Column::DossierId.eq(d.id.clone()))
            .exec(txn)
            .await?;
        party::Entity::delete_many()
            .filter(party::Column::DossierId.eq(d.id.clone()))
            .exec(txn)
            .await?;
        dossier::Entity::delete_by_id(d.id.clone())
            .exec(txn)
            .await?;
        Ok((docs.into_iter().map(|x| x.sha256).collect(), entries))
    }

    /// Remove objects no document references any more.
    async fn collect_objects(&self, shas: Vec<String>) -> Result<(), DbErr> {
        for sha in shas {
            let still = document::Entity::find()
                .filter(document::Column::Sha256.eq(sha.clone()))
                .count(self.db())
                .await?;
            if still == 0
                && let Err(e) = self.objects().delete(&sha).await
            {
                tracing::warn!(error = %e, "cannot delete an unreferenced object");
            }
        }
        Ok(())
    }

    /// Purge closed dossiers past their process's retention, except those
    /// on legal hold. With `dry_run`, only report.
    pub async fn purge_expired(&self, dry_run: bool, actor: &str) -> Result<PurgeReport, DbErr> {
        let now = self.now();
        let catalog = self.catalog();
        let mut report = PurgeReport::default();
        for def in catalog.all() {
            if def.retention_days == 0 {
                continue;
            }
            let cutoff = now - Duration::days(def.retention_days as i64);
            let expired = dossier::Entity::find()
                .filter(dossier::Column::ProcessId.eq(def.id.clone()))
                .filter(dossier::Column::ProcessVersion.eq(def.version as i32))
                .filter(dossier::Column::ClosedAt.lt(cutoff))
                .limit(1000)
                .all(self.db())
                .await?;
            for d in expired {
                if d.legal_hold {
                    report.held.push(d.reference.clone());
                    continue;
                }
                if dry_run {
                    report.references.push(d.reference.clone());
                    continue;
                }
                let txn = self.db().begin().await?;
                let (shas, _) = self.delete_dossier_in(&txn, &d).await?;
                report.documents += shas.len() as u32;
                let event = self.outbox().domain_event(
                    "dossier",
                    "dossier_purged",
                    format!("dossiers/{}", d.id),
                    &ev::DossierPurged {
                        dossier_id: d.id.clone(),
                        reference: d.reference.clone(),
                        process_id: d.process_id.clone(),
                        documents: shas.len() as u32,
                        occur_time: Some(guichet_proto::convert::timestamp(now)),
                    },
                );
                self.outbox().stage(&txn, &event).await?;
                self.audit_in(
                    &txn,
                    actor,
                    "dossier.purge",
                    &format!("dossiers/{}", d.id),
                    &format!("retention of {} days over", def.retention_days),
                )
                .await?;
                txn.commit().await?;
                self.outbox().notify();
                self.collect_objects(shas).await?;
                report.references.push(d.reference.clone());
            }
        }
        if !dry_run && !report.references.is_empty() {
            metrics::counter!("guichet_dossier_purged_total")
                .increment(report.references.len() as u64);
            tracing::info!(
                dossiers = report.references.len(),
                documents = report.documents,
                "retention purge"
            );
        }
        Ok(report)
    }

    /// Everything held about a citizen, as one JSON document.
    pub async fn export_citizen(&self, id: &str, actor: &str) -> Result<Option<String>, DbErr> {
        let Some(c) = citizen::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
        else {
            return Ok(None);
        };
        let contacts = contact::Entity::find()
            .filter(contact::Column::CitizenId.eq(id))
            .order_by_asc(contact::Column::Id)
            .all(self.db())
            .await?;
        let concerned: Vec<String> = party::Entity::find()
            .filter(party::Column::CitizenId.eq(id))
            .all(self.db())
            .await?
            .into_iter()
            .map(|p| p.dossier_id)
            .collect();
        let dossiers = dossier::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(dossier::Column::CitizenId.eq(id))
                    .add(dossier::Column::Id.is_in(concerned)),
            )
            .order_by_asc(dossier::Column::Id)
            .all(self.db())
            .await?;
        let catalog = self.catalog();
        let mut dossiers_json = Vec::new();
        for d in &dossiers {
            let def = catalog.get(&d.process_id, d.process_version as u32);
            let docs = document::Entity::find()
                .filter(document::Column::DossierId.eq(d.id.clone()))
                .all(self.db())
                .await?;
            let links = self.links(&d.id).await?;
            let transitions = transition::Entity::find()
                .filter(transition::Column::DossierId.eq(d.id.clone()))
                .order_by_asc(transition::Column::CreatedAt)
                .all(self.db())
                .await?;
            dossiers_json.push(json!({
                "id": d.id,
                "reference": d.reference,
                "concerned_as": if d.citizen_id == id { "citizen" } else { "other_citizen" },
                "process": {"id": d.process_id, "version": d.process_version, "title": def.map(|p| p.title.clone())},
                "state": d.state,
                "state_title": def.and_then(|p| p.state(&d.state)).map(|s| s.title.clone()),
                "opened_at": d.created_at,
                "closed_at": d.closed_at,
                "holder_department": d.holder_department,
                "legal_hold": d.legal_hold,
                "documents": docs.iter().map(|x| json!({
                    "id": x.id, "filename": x.filename, "media_type": x.media_type,
                    "size_bytes": x.size_bytes, "sha256": x.sha256, "type": x.document_type,
                    "channel": x.source_channel, "received_at": x.created_at,
                })).collect::<Vec<_>>(),
                "links": links.iter().map(|l| json!({"kind": l.kind, "ref_id": l.ref_id, "status": l.status})).collect::<Vec<_>>(),
                "transitions": transitions.iter().map(|t| json!({
                    "from": t.from_state, "to": t.to_state, "by": t.actor, "reason": t.reason,
                    "cause": t.cause, "at": t.created_at,
                })).collect::<Vec<_>>(),
            }));
        }
        let entries = timeline::Entity::find()
            .filter(timeline::Column::CitizenId.eq(id))
            .order_by_asc(timeline::Column::OccurredAt)
            .order_by_asc(timeline::Column::Id)
            .all(self.db())
            .await?;
        let merges = merge::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(merge::Column::TargetId.eq(id))
                    .add(merge::Column::SourceId.eq(id)),
            )
            .all(self.db())
            .await?;
        let lines: Vec<String> = serde_json::from_str(&c.address_lines).unwrap_or_default();
        let doc = json!({
            "format": "guichet.citizen-export.v1",
            "exported_at": self.now(),
            "citizen": {
                "id": c.id,
                "given_name": c.given_name,
                "family_name": c.family_name,
                "address": {"lines": lines, "postal_code": c.postal_code, "city": c.city, "country": c.country},
                "preferred_channel": c.preferred_channel,
                "language": c.language,
                "created_at": c.created_at,
                "merged_into": c.merged_into,
                "erased_at": c.erased_at,
            },
            "phones": contacts.iter().filter(|x| x.kind == "phone").map(|x| x.value.clone()).collect::<Vec<_>>(),
            "emails": contacts.iter().filter(|x| x.kind == "email").map(|x| x.value.clone()).collect::<Vec<_>>(),
            "dossiers": dossiers_json,
            "timeline": entries.iter().map(|e| json!({
                "id": e.id, "dossier_id": e.dossier_id, "kind": e.kind, "channel": e.channel,
                "at": e.occurred_at, "summary": e.summary, "by": e.actor,
                "visibility": if e.visibility.is_empty() { None } else { Some(e.visibility.clone()) },
            })).collect::<Vec<_>>(),
            "merges": merges.iter().map(|m| json!({
                "id": m.id, "target": m.target_id, "source": m.source_id, "by": m.actor,
                "reason": m.reason, "at": m.created_at, "split_at": m.split_at,
            })).collect::<Vec<_>>(),
        });
        self.audit(actor, "citizen.export", &format!("citizens/{id}"), "")
            .await?;
        Ok(Some(serde_json::to_string_pretty(&doc).unwrap_or_default()))
    }

    /// Erase a citizen where no retention obligation applies: every dossier
    /// closed and past its retention (and not on hold), or none. The record
    /// stays as an anonymous tombstone with the erasure date.
    pub async fn erase_citizen(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Erased, EraseError> {
        let now = self.now();
        let Some(c) = citizen::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
        else {
            return Err(EraseError::NotFound);
        };
        if c.erased_at.is_some() {
            return Ok(Erased::default());
        }
        let dossiers = dossier::Entity::find()
            .filter(dossier::Column::CitizenId.eq(id))
            .all(self.db())
            .await?;
        // Dossiers of others where this citizen is also concerned: their
        // retention applies too; past it, only the link to the citizen goes.
        let concerned: Vec<String> = party::Entity::find()
            .filter(party::Column::CitizenId.eq(id))
            .all(self.db())
            .await?
            .into_iter()
            .map(|p| p.dossier_id)
            .collect();
        let others = dossier::Entity::find()
            .filter(dossier::Column::Id.is_in(concerned))
            .all(self.db())
            .await?;
        let catalog = self.catalog();
        let retained: Vec<String> = dossiers
            .iter()
            .chain(others.iter())
            .filter(|d| {
                let retention = catalog
                    .get(&d.process_id, d.process_version as u32)
                    .map(|p| p.retention_days)
                    .unwrap_or(u32::MAX);
                d.legal_hold
                    || match d.closed_at {
                        None => true,
                        Some(closed) => {
                            retention > 0 && closed + Duration::days(retention as i64) > now
                        }
                    }
            })
            .map(|d| d.reference.clone())
            .collect();
        if !retained.is_empty() {
            return Err(EraseError::Retained(retained));
        }
        let txn = self.db().begin().await?;
        let mut erased = Erased::default();
        let mut shas = Vec::new();
        for d in &dossiers {
            let (s, entries) = self.delete_dossier_in(&txn, d).await?;
            erased.documents += s.len() as u32;
            erased.entries += entries as u32;
            erased.dossiers += 1;
            shas.extend(s);
        }
        erased.entries += timeline::Entity::delete_many()
            .filter(timeline::Column::CitizenId.eq(id))
            .exec(&txn)
            .await?
            .rows_affected as u32;
        contact::Entity::delete_many()
            .filter(contact::Column::CitizenId.eq(id))
            .exec(&txn)
            .await?;
        party::Entity::delete_many()
            .filter(party::Column::CitizenId.eq(id))
            .exec(&txn)
            .await?;
        citizen::Entity::update_many()
            .col_expr(citizen::Column::GivenName, Expr::value(""))
            .col_expr(citizen::Column::FamilyName, Expr::value(""))
            .col_expr(citizen::Column::NameKey, Expr::value(""))
            .col_expr(citizen::Column::AddressLines, Expr::value("[]"))
            .col_expr(citizen::Column::PostalCode, Expr::value(""))
            .col_expr(citizen::Column::City, Expr::value(""))
            .col_expr(citizen::Column::Country, Expr::value(""))
            .col_expr(citizen::Column::AddressKey, Expr::value(""))
            .col_expr(citizen::Column::ErasedAt, Expr::value(Some(now)))
            .col_expr(citizen::Column::UpdatedAt, Expr::value(now))
            .filter(citizen::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        let event = self.outbox().domain_event(
            "dossier",
            "citizen_erased",
            format!("citizens/{id}"),
            &ev::CitizenChanged {
                citizen_id: id.to_owned(),
                change: "erased".into(),
                actor: actor.to_owned(),
                occur_time: Some(guichet_proto::convert::timestamp(now)),
                ..Default::default()
            },
        );
        self.outbox().stage(&txn, &event).await?;
        // The erasure itself is recorded (the reason stays: it names no one).
        self.audit_in(
            &txn,
            actor,
            "citizen.erase",
            &format!("citizens/{id}"),
            &format!(
                "{} dossiers, {} entries, {} documents erased; reason: {reason}",
                erased.dossiers, erased.entries, erased.documents
            ),
        )
        .await?;
        txn.commit().await?;
        self.outbox().notify();
        self.collect_objects(shas).await?;
        Ok(erased)
    }

    pub async fn list_audit(
        &self,
        resource: Option<&str>,
        actor: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<audit::Model>, DbErr> {
        let mut q = audit::Entity::find()
            .order_by_desc(audit::Column::Id)
            .limit(limit);
        if let Some(r) = resource {
            q = q.filter(audit::Column::Resource.eq(r));
        }
        if let Some(a) = actor {
            q = q.filter(audit::Column::Actor.eq(a));
        }
        if let Some(a) = after {
            q = q.filter(audit::Column::Id.lt(a));
        }
        q.all(self.db()).await
    }
}
