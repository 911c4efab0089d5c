//! Citizen records beyond resolution: updates, search, merge and split.
//!
//! A merge moves the source record's contact points, dossiers and timeline
//! to the target and keeps the source as "merged into" the target; it
//! records exactly what moved, so a wrong merge can be split back.

use guichet_platform::contact::{Address, CitizenInput, name_key};
use guichet_proto::events::v1 as ev;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};

use crate::db::entities::{citizen, contact, dossier, merge, party, timeline};
use crate::store::{CitizenView, NewEntry, Store, insert_entry};

/// What a merge moved, kept to split it back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Moved {
    /// Contact rows re-pointed to the target.
    pub contacts: Vec<i64>,
    /// Contact points the target already had: the source's rows were
    /// dropped and are recreated on split.
    pub duplicate_contacts: Vec<(String, String)>,
    pub dossiers: Vec<String>,
    pub entries: Vec<String>,
    /// "Other citizen concerned" rows re-pointed to the target.
    #[serde(default)]
    pub parties: Vec<String>,
    /// Dossiers where both were concerned: the source's row was dropped.
    #[serde(default)]
    pub duplicate_parties: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0}")]
    Refused(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Changes to a citizen record (None: unchanged).
#[derive(Debug, Default)]
pub struct CitizenUpdate {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub address: Option<Address>,
    pub preferred_channel: Option<String>,
    pub language: Option<String>,
    pub add: CitizenInput,
}

impl Store {
    pub async fn update_citizen(
        &self,
        id: &str,
        u: CitizenUpdate,
        actor: &str,
    ) -> Result<Option<CitizenView>, DbErr> {
        let Some(c) = citizen::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
        else {
            return Ok(None);
        };
        let given = u.given_name.clone().unwrap_or_else(|| c.given_name.clone());
        let family = u
            .family_name
            .clone()
            .unwrap_or_else(|| c.family_name.clone());
        let txn = self.db().begin().await?;
        let mut m: citizen::ActiveModel = c.into();
        m.given_name = Set(given.clone());
        m.family_name = Set(family.clone());
        m.name_key = Set(name_key(&given, &family));
        if let Some(a) = u.address {
            m.address_key = Set(a.key());
            m.address_lines = Set(serde_json::to_string(&a.lines).unwrap_or_else(|_| "[]".into()));
            m.postal_code = Set(a.postal_code);
            m.city = Set(a.city);
            m.country = Set(a.country);
        }
        if let Some(p) = u.preferred_channel {
            m.preferred_channel = Set(p);
        }
        if let Some(l) = u.language {
            m.language = Set(l);
        }
        m.updated_at = Set(self.now());
        m.update(&txn).await?;
        self.stage_citizen_event(&txn, id, "updated", "", "", actor)
            .await?;
        self.audit_in(&txn, actor, "citizen.update", &format!("citizens/{id}"), "")
            .await?;
        txn.commit().await?;
        self.outbox().notify();
        self.add_contacts(id, &u.add).await?;
        self.get_citizen(id).await
    }

    /// Citizens matching a name (every word, accents and case ignored), a
    /// phone number or an email address; by id, after `after`.
    pub async fn search_citizens(
        &self,
        query: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<CitizenView>, DbErr> {
        let mut q = citizen::Entity::find()
            .filter(citizen::Column::MergedInto.is_null())
            .filter(citizen::Column::ErasedAt.is_null())
            .order_by_asc(citizen::Column::Id)
            .limit(limit);
        if let Some(a) = after {
            q = q.filter(citizen::Column::Id.gt(a));
        }
        let contact_value = if query.contains('@') {
            guichet_platform::contact::Email::parse(query)
                .ok()
                .map(|e| ("email", e.as_str().to_owned()))
        } else if query.chars().filter(|c| c.is_ascii_digit()).count() >= 6 {
            guichet_platform::contact::Phone::parse(query)
                .ok()
                .map(|p| ("phone", p.as_str().to_owned()))
        } else {
            None
        };
        if let Some((kind, value)) = contact_value {
            let ids: Vec<String> = contact::Entity::find()
                .filter(contact::Column::Kind.eq(kind))
                .filter(contact::Column::Value.eq(value))
                .all(self.db())
                .await?
                .into_iter()
                .map(|c| c.citizen_id)
                .collect();
            q = q.filter(citizen::Column::Id.is_in(ids));
        } else {
            let key = name_key("", query);
            if key.is_empty() {
                return Ok(vec![]);
            }
            for word in key.split(' ') {
                q = q.filter(citizen::Column::NameKey.like(format!("%{word}%")));
            }
        }
        let mut out = Vec::new();
        for c in q.all(self.db()).await? {
            out.push(self.view(c).await?);
        }
        Ok(out)
    }

    async fn stage_citizen_event(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        id: &str,
        change: &str,
        other: &str,
        merge_id: &str,
        actor: &str,
    ) -> Result<(), DbErr> {
        let event = self.outbox().domain_event(
            "dossier",
            &format!("citizen_{change}"),
            format!("citizens/{id}"),
            &ev::CitizenChanged {
                citizen_id: id.to_owned(),
                change: change.to_owned(),
                other_citizen_id: other.to_owned(),
                merge_id: merge_id.to_owned(),
                actor: actor.to_owned(),
                occur_time: Some(guichet_proto::convert::timestamp(self.now())),
            },
        );
        self.outbox().stage(conn, &event).await
    }

    pub async fn merge_citizens(
        &self,
        target_id: &str,
        source_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<merge::Model, MergeError> {
        if target_id == source_id {
            return Err(MergeError::Refused(
                "a citizen cannot be merged into itself".into(),
            ));
        }
        let txn = self.db().begin().await?;
        let mut records = Vec::new();
        for id in [target_id, source_id] {
            let c = citizen::Entity::find_by_id(id.to_owned())
                .one(&txn)
                .await?
                .ok_or_else(|| MergeError::NotFound(format!("citizen {id}")))?;
            if c.merged_into.is_some() || c.erased_at.is_some() {
                return Err(MergeError::Refused(format!(
                    "citizen {id} is already merged or erased"
                )));
            }
            records.push(c);
        }
        let now = self.now();
        let mut moved = Moved::default();
        let target_points: Vec<(String, String)> = contact::Entity::find()
            .filter(contact::Column::CitizenId.eq(target_id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|c| (c.kind, c.value))
            .collect();
        for c in contact::Entity::find()
            .filter(contact::Column::CitizenId.eq(source_id))
            .all(&txn)
            .await?
        {
            if target_points.contains(&(c.kind.clone(), c.value.clone())) {
                moved
                    .duplicate_contacts
                    .push((c.kind.clone(), c.value.clone()));
                contact::Entity::delete_by_id(c.id).exec(&txn).await?;
            } else {
                moved.contacts.push(c.id);
            }
        }
        contact::Entity::update_many()
            .col_expr(contact::Column::CitizenId, Expr::value(target_id))
            .filter(contact::Column::Id.is_in(moved.contacts.clone()))
            .exec(&txn)
            .await?;
        moved.dossiers = dossier::Entity::find()
            .filter(dossier::Column::CitizenId.eq(source_id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        dossier::Entity::update_many()
            .col_expr(dossier::Column::CitizenId, Expr::value(target_id))
            .filter(dossier::Column::CitizenId.eq(source_id))
            .exec(&txn)
            .await?;
        let target_parties: Vec<String> = party::Entity::find()
            .filter(party::Column::CitizenId.eq(target_id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|p| p.dossier_id)
            .collect();
        for p in party::Entity::find()
            .filter(party::Column::CitizenId.eq(source_id))
            .all(&txn)
            .await?
        {
            if target_parties.contains(&p.dossier_id) {
                moved.duplicate_parties.push(p.dossier_id.clone());
                party::Entity::delete_by_id(p.id).exec(&txn).await?;
            } else {
                moved.parties.push(p.id);
            }
        }
        party::Entity::update_many()
            .col_expr(party::Column::CitizenId, Expr::value(target_id))
            .filter(party::Column::Id.is_in(moved.parties.clone()))
            .exec(&txn)
            .await?;
        moved.entries = timeline::Entity::find()
            .filter(timeline::Column::CitizenId.eq(source_id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        timeline::Entity::update_many()
            .col_expr(timeline::Column::CitizenId, Expr::value(target_id))
            .filter(timeline::Column::CitizenId.eq(source_id))
            .exec(&txn)
            .await?;
        citizen::Entity::update_many()
            .col_expr(
                citizen::Column::MergedInto,
                Expr::value(Some(target_id.to_owned())),
            )
            .col_expr(citizen::Column::UpdatedAt, Expr::value(now))
            .filter(citizen::Column::Id.eq(source_id))
            .exec(&txn)
            .await?;
        let id = uuid::Uuid::now_v7().to_string();
        let m = merge::ActiveModel {
            id: Set(id.clone()),
            target_id: Set(target_id.to_owned()),
            source_id: Set(source_id.to_owned()),
            actor: Set(actor.to_owned()),
            reason: Set(reason.to_owned()),
            moved: Set(serde_json::to_string(&moved).unwrap_or_default()),
            created_at: Set(now),
            split_at: Set(None),
            split_actor: Set(String::new()),
            split_reason: Set(String::new()),
        }
        .insert(&txn)
        .await?;
        insert_entry(
            &txn,
            NewEntry {
                citizen_id: target_id.to_owned(),
                dossier_id: None,
                kind: "merge".into(),
                channel: "unspecified".into(),
                occurred_at: now,
                summary: format!(
                    "Fiches fusionnées : {} dossier(s) et {} élément(s) d'historique rattachés (motif : {reason})",
                    moved.dossiers.len(),
                    moved.entries.len()
                ),
                actor: actor.to_owned(),
                source_event_id: Some(format!("merge:{id}")),
            },
            "",
        )
        .await?;
        self.stage_citizen_event(&txn, target_id, "merged", source_id, &id, actor)
            .await?;
        self.audit_in(
            &txn,
            actor,
            "citizen.merge",
            &format!("citizens/{target_id}"),
            &format!("merged citizens/{source_id} (merge {id})"),
        )
        .await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(m)
    }

    pub async fn split_citizen(
        &self,
        merge_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<merge::Model, MergeError> {
        let txn = self.db().begin().await?;
        let m = merge::Entity::find_by_id(merge_id.to_owned())
            .one(&txn)
            .await?
            .ok_or_else(|| MergeError::NotFound(format!("merge {merge_id}")))?;
        if m.split_at.is_some() {
            return Err(MergeError::Refused("this merge was already split".into()));
        }
        let moved: Moved = serde_json::from_str(&m.moved).unwrap_or_default();
        let now = self.now();
        contact::Entity::update_many()
            .col_expr(contact::Column::CitizenId, Expr::value(m.source_id.clone()))
            .filter(contact::Column::Id.is_in(moved.contacts.clone()))
            .exec(&txn)
            .await?;
        for (kind, value) in &moved.duplicate_contacts {
            contact::ActiveModel {
                citizen_id: Set(m.source_id.clone()),
                kind: Set(kind.clone()),
                value: Set(value.clone()),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
        dossier::Entity::update_many()
            .col_expr(dossier::Column::CitizenId, Expr::value(m.source_id.clone()))
            .filter(dossier::Column::Id.is_in(moved.dossiers.clone()))
            .exec(&txn)
            .await?;
        timeline::Entity::update_many()
            .col_expr(
                timeline::Column::CitizenId,
                Expr::value(m.source_id.clone()),
            )
            .filter(timeline::Column::Id.is_in(moved.entries.clone()))
            .exec(&txn)
            .await?;
        party::Entity::update_many()
            .col_expr(party::Column::CitizenId, Expr::value(m.source_id.clone()))
            .filter(party::Column::Id.is_in(moved.parties.clone()))
            .exec(&txn)
            .await?;
        for dossier_id in &moved.duplicate_parties {
            party::ActiveModel {
                id: Set(uuid::Uuid::now_v7().to_string()),
                dossier_id: Set(dossier_id.clone()),
                citizen_id: Set(m.source_id.clone()),
                created_at: Set(now),
            }
            .insert(&txn)
            .await?;
        }
        citizen::Entity::update_many()
            .col_expr(citizen::Column::MergedInto, Expr::value(None::<String>))
            .col_expr(citizen::Column::UpdatedAt, Expr::value(now))
            .filter(citizen::Column::Id.eq(m.source_id.clone()))
            .exec(&txn)
            .await?;
        let mut am: merge::ActiveModel = m.clone().into();
        am.split_at = Set(Some(now));
        am.split_actor = Set(actor.to_owned());
        am.split_reason = Set(reason.to_owned());
        let m = am.update(&txn).await?;
        insert_entry(
            &txn,
            NewEntry {
                citizen_id: m.target_id.clone(),
                dossier_id: None,
                kind: "merge".into(),
                channel: "unspecified".into(),
                occurred_at: now,
                summary: format!(
                    "Fusion annulée : les fiches sont de nouveau séparées (motif : {reason})"
                ),
                actor: actor.to_owned(),
                source_event_id: Some(format!("split:{}", m.id)),
            },
            "",
        )
        .await?;
        self.stage_citizen_event(&txn, &m.source_id, "split", &m.target_id, &m.id, actor)
            .await?;
        self.audit_in(
            &txn,
            actor,
            "citizen.split",
            &format!("citizens/{}", m.source_id),
            &format!("split from citizens/{} (merge {})", m.target_id, m.id),
        )
        .await?;
        txn.commit().await?;
        self.outbox().notify();
        Ok(m)
    }

    pub fn merge_counts(m: &merge::Model) -> (u32, u32, u32) {
        let moved: Moved = serde_json::from_str(&m.moved).unwrap_or_default();
        (
            (moved.contacts.len() + moved.duplicate_contacts.len()) as u32,
            moved.dossiers.len() as u32,
            moved.entries.len() as u32,
        )
    }
}
