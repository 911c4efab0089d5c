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
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("join waiting list"))?;
        let inserted = w.insert(&txn).await;
        let inserted = match inserted {
            Ok(m) => {
                // A slot already free in their window is offered at once.
                let now = self.now();
                match self
                    .add_job(&txn, "waitlist_join", &m.id, serde_json::json!({}), now)
                    .await
                {
                    Ok(()) => txn.commit().await.map(|()| m),
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                let _ = txn.rollback().await;
                Err(e)
            }
        };
        match inserted {
            Ok(m) => {
                tracing::info!(waiter_id = %m.id, "waiting list joined");
                self.outbox.notify();
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
