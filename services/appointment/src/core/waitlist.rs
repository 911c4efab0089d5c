//! The waiting list: citizens who want an earlier slot.

use super::*;

impl Core {
    pub async fn join_waitlist(
        &self,
        w: waiter::ActiveModel,
        request_id: Option<String>,
    ) -> Result<waiter::Model, Error> {
        if let Some(rid) = &request_id
            && let Some(m) = waiter::Entity::find()
                .filter(waiter::Column::RequestId.eq(rid.as_str()))
                .one(&self.db)
                .await
                .map_err(internal_err("join waiting list"))?
        {
            return Ok(m);
        }
        match w.insert(&self.db).await {
            Ok(m) => {
                tracing::info!(waiter_id = %m.id, "waiting list joined");
                Ok(m)
            }
            Err(e) if is_unique_violation(&e) => waiter::Entity::find()
                .filter(waiter::Column::RequestId.eq(request_id.unwrap_or_default()))
                .one(&self.db)
                .await
                .map_err(internal_err("join waiting list"))?
                .ok_or_else(|| internal("join waiting list", e)),
            Err(e) => Err(internal("join waiting list", e)),
        }
    }

    pub async fn leave_waitlist(&self, id: &str) -> Result<waiter::Model, Error> {
        let m = waiter::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(internal_err("leave waiting list"))?
            .ok_or_else(|| not_found("waiting list entry", id))?;
        let mut am = m.into_active_model();
        am.active = Set(false);
        am.update(&self.db)
            .await
            .map_err(internal_err("leave waiting list"))
    }
}
