//! The town's own wording of message templates, from the process studio:
//! kept in the database, checked like a file of `templates_dir`, and laid
//! over the shipped wording on every replica (each re-reads them on a
//! timer; the replica that writes applies them at once).

use std::collections::HashMap;

use guichet_platform::auth;
use guichet_platform::grpc::{internal_err, invalid_argument, not_found};
use guichet_proto::convert::timestamp;
use guichet_proto::notification::v1 as pb;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::db::entities::{template_change, template_override};
use crate::templates::{DOSSIER_VARIABLES, Template, TemplateError, Wording};

impl Core {
    /// Read the studio's wordings and lay them over the base templates.
    pub async fn reload_wordings(&self) -> Result<(), sea_orm::DbErr> {
        let rows = template_override::Entity::find()
            .order_by_asc(template_override::Column::Id)
            .all(&self.db)
            .await?;
        let overrides: Vec<(String, String)> = rows.into_iter().map(|r| (r.id, r.text)).collect();
        self.catalog.apply(&overrides);
        Ok(())
    }
}

/// Sample values for the preview: the dossier's variables with a made-up
/// citizen, and the variable's name in brackets for the others.
fn sample(core: &Core, t: &Template) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = t
        .variables()
        .into_iter()
        .map(|v| (v.clone(), format!("[{v}]")))
        .collect();
    for (k, v) in [
        ("town", core.config.town.name.clone()),
        ("reference", "VIN-2026-000123".into()),
        ("process", "Passeport".into()),
        ("state", "Titre disponible".into()),
        ("salutation", "Bonjour Camille Martin".into()),
        ("given_name", "Camille".into()),
        ("family_name", "Martin".into()),
    ] {
        vars.insert(k.to_owned(), v);
    }
    vars
}

async fn message(core: &Core, t: &Template) -> Result<pb::MessageTemplate, Status> {
    let row = template_override::Entity::find_by_id(t.id.clone())
        .one(&core.db)
        .await
        .map_err(internal_err("template wording"))?;
    let changes = template_change::Entity::find()
        .filter(template_change::Column::TemplateId.eq(t.id.clone()))
        .order_by_desc(template_change::Column::ChangedAt)
        .order_by_desc(template_change::Column::Id)
        .all(&core.db)
        .await
        .map_err(internal_err("template changes"))?
        .into_iter()
        .map(|c| pb::TemplateChange {
            action: c.action,
            actor: c.actor,
            reason: c.reason,
            change_time: Some(timestamp(c.changed_at)),
            text: c.text,
        })
        .collect();
    let vars = sample(core, t);
    let catalog = core.catalog.current();
    let sms = catalog.sms_text(&t.id, &vars).unwrap_or_default();
    let shape = crate::gsm::shape(&sms);
    let email = catalog.render_email(&t.id, &vars).ok();
    let mut variables: Vec<String> = DOSSIER_VARIABLES.iter().map(|v| (*v).to_owned()).collect();
    if let Some(b) = core.catalog.base().get(&t.id) {
        variables.extend(b.variables());
    }
    variables.extend(t.variables());
    variables.sort();
    variables.dedup();
    Ok(pb::MessageTemplate {
        id: t.id.clone(),
        description: t.description.clone(),
        sms: t.sms.clone().unwrap_or_default(),
        email_subject: t
            .email
            .as_ref()
            .map(|e| e.subject.clone())
            .unwrap_or_default(),
        email_body: t.email.as_ref().map(|e| e.body.clone()).unwrap_or_default(),
        origin: t.origin.to_owned(),
        updated_by: row
            .as_ref()
            .map(|r| r.updated_by.clone())
            .unwrap_or_default(),
        update_time: row.as_ref().map(|r| timestamp(r.updated_at)),
        reason: row.map(|r| r.reason).unwrap_or_default(),
        variables: variables
            .into_iter()
            .map(|v| format!("{{{{{v}}}}}"))
            .collect(),
        preview_sms: sms.clone(),
        preview_email_subject: email
            .as_ref()
            .map(|e| e.subject.clone())
            .unwrap_or_default(),
        preview_email_body: email.map(|e| e.body).unwrap_or_default(),
        sms_segments: if sms.is_empty() { 0 } else { shape.segments },
        sms_encoding: if sms.is_empty() {
            String::new()
        } else {
            shape.encoding.as_str().to_owned()
        },
        has_base: core.catalog.base().get(&t.id).is_some(),
        changes,
    })
}

fn id_of(id: &str) -> Result<String, Status> {
    let id = id.trim();
    if id.is_empty() {
        return Err(invalid_argument("id", "is required"));
    }
    Ok(id.to_owned())
}

fn template_status(e: TemplateError) -> Status {
    match e {
        TemplateError::Invalid(field, reason) => {
            // A checked file names the template; a form names its field.
            let field = match reason.split_once(':') {
                Some((f, _)) if ["sms", "email.subject", "email.body"].contains(&f) => f.to_owned(),
                _ if reason.starts_with("email") => "email".to_owned(),
                _ if reason.starts_with("description") => "description".to_owned(),
                _ if reason.contains("neither an sms") => "sms".to_owned(),
                _ => field,
            };
            invalid_argument(&field, reason)
        }
        other => invalid_argument("template", other.to_string()),
    }
}

pub(crate) async fn list(
    core: &Core,
    _request: Request<pb::ListTemplatesRequest>,
) -> Result<Response<pb::ListTemplatesResponse>, Status> {
    let catalog = core.catalog.current();
    let mut templates = Vec::new();
    for t in catalog.all() {
        templates.push(message(core, t).await?);
    }
    Ok(Response::new(pb::ListTemplatesResponse { templates }))
}

pub(crate) async fn get(
    core: &Core,
    request: Request<pb::GetTemplateRequest>,
) -> Result<Response<pb::MessageTemplate>, Status> {
    let id = id_of(&request.get_ref().id)?;
    let catalog = core.catalog.current();
    let t = catalog.get(&id).ok_or_else(|| not_found("template", &id))?;
    Ok(Response::new(message(core, t).await?))
}

pub(crate) async fn update(
    core: &Core,
    request: Request<pb::UpdateTemplateRequest>,
) -> Result<Response<pb::MessageTemplate>, Status> {
    let p = auth::caller(&request)?;
    let req = request.into_inner();
    let id = id_of(&req.id)?;
    if req.reason.trim().is_empty() {
        return Err(invalid_argument("reason", "say why the wording changes"));
    }
    let text = core
        .catalog
        .check(
            &id,
            &Wording {
                description: req.description,
                sms: req.sms,
                email_subject: req.email_subject,
                email_body: req.email_body,
            },
        )
        .map_err(template_status)?;
    let now = core.clock.now();
    let reason = req.reason.trim().to_owned();
    let row = template_override::ActiveModel {
        id: Set(id.clone()),
        text: Set(text.clone()),
        updated_by: Set(p.subject.clone()),
        reason: Set(reason.clone()),
        updated_at: Set(now),
    };
    let save = internal_err("save template wording");
    let txn = core.db.begin().await.map_err(&save)?;
    let exists = template_override::Entity::find_by_id(id.clone())
        .one(&txn)
        .await
        .map_err(&save)?
        .is_some();
    if exists {
        row.update(&txn).await
    } else {
        row.insert(&txn).await
    }
    .map_err(&save)?;
    record_change(&txn, &id, "update", &text, &p.subject, &reason, now)
        .await
        .map_err(&save)?;
    txn.commit().await.map_err(&save)?;
    core.reload_wordings()
        .await
        .map_err(internal_err("reload template wordings"))?;
    tracing::info!(template = %id, actor = %p.subject, "template wording changed");
    let catalog = core.catalog.current();
    let t = catalog.get(&id).ok_or_else(|| not_found("template", &id))?;
    Ok(Response::new(message(core, t).await?))
}

pub(crate) async fn reset(
    core: &Core,
    request: Request<pb::ResetTemplateRequest>,
) -> Result<Response<pb::MessageTemplate>, Status> {
    let p = auth::caller(&request)?;
    let id = id_of(&request.get_ref().id)?;
    let reason = request.get_ref().reason.trim().to_owned();
    if reason.is_empty() {
        return Err(invalid_argument(
            "reason",
            "say why the shipped wording comes back",
        ));
    }
    if core.catalog.base().get(&id).is_none() {
        return Err(guichet_platform::grpc::failed_precondition(
            "TEMPLATE_BASE",
            &format!("templates/{id}"),
            "this template exists only in the studio: there is no shipped wording to go back to",
        ));
    }
    let save = internal_err("reset template wording");
    let txn = core.db.begin().await.map_err(&save)?;
    template_override::Entity::delete_by_id(id.clone())
        .exec(&txn)
        .await
        .map_err(&save)?;
    record_change(
        &txn,
        &id,
        "reset",
        "",
        &p.subject,
        &reason,
        core.clock.now(),
    )
    .await
    .map_err(&save)?;
    txn.commit().await.map_err(&save)?;
    core.reload_wordings()
        .await
        .map_err(internal_err("reload template wordings"))?;
    tracing::info!(template = %id, actor = %p.subject, "template wording reset");
    let catalog = core.catalog.current();
    let t = catalog.get(&id).ok_or_else(|| not_found("template", &id))?;
    Ok(Response::new(message(core, t).await?))
}

async fn record_change(
    conn: &impl sea_orm::ConnectionTrait,
    template_id: &str,
    action: &str,
    text: &str,
    actor: &str,
    reason: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sea_orm::DbErr> {
    template_change::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        template_id: Set(template_id.to_owned()),
        action: Set(action.to_owned()),
        text: Set(text.to_owned()),
        actor: Set(actor.to_owned()),
        reason: Set(reason.to_owned()),
        changed_at: Set(at),
    }
    .insert(conn)
    .await
    .map(|_| ())
}
