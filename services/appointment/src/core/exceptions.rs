//! Run-time exceptions (extra openings, closures, absences) and the bookings they affect.

use super::*;

impl Core {
    /// Record a run-time exception; returns it with the number of bookings
    /// still booked inside it (closures and absences).
    pub async fn create_exception(
        &self,
        caller: &Caller,
        desk: &str,
        kind: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        reason: &str,
    ) -> Result<(exception::Model, u64), Error> {
        let m = exception::ActiveModel {
            id: Set(uuid::Uuid::now_v7().to_string()),
            desk_id: Set(desk.to_owned()),
            kind: Set(kind.to_owned()),
            start_at: Set(start),
            end_at: Set(end),
            reason: Set(reason.to_owned()),
            created_by: Set(caller.subject.clone()),
            created_at: Set(self.now()),
        };
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("create schedule exception"))?;
        let m = m
            .insert(&txn)
            .await
            .map_err(internal_err("create schedule exception"))?;
        self.bump_slot_versions(&txn, &[desk])
            .await
            .map_err(internal_err("create schedule exception"))?;
        txn.commit()
            .await
            .map_err(internal_err("create schedule exception"))?;
        self.settle_slot_versions(&[desk]).await;
        let affected = self.affected(&m).await?;
        tracing::info!(exception_id = %m.id, desk, kind, affected, "schedule exception created");
        Ok((m, affected))
    }

    /// Bookings still booked inside a closure or absence.
    pub async fn affected(&self, e: &exception::Model) -> Result<u64, Error> {
        use sea_orm::PaginatorTrait;
        if e.kind == "extra_opening" {
            return Ok(0);
        }
        booking::Entity::find()
            .filter(booking::Column::DeskId.eq(e.desk_id.as_str()))
            .filter(booking::Column::Status.eq(BOOKED))
            .filter(booking::Column::StartAt.lt(e.end_at))
            .filter(booking::Column::EndAt.gt(e.start_at))
            .count(&self.db)
            .await
            .map_err(internal_err("count affected bookings"))
    }

    pub async fn delete_exception(&self, id: &str) -> Result<exception::Model, Error> {
        let m = exception::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(internal_err("delete schedule exception"))?
            .ok_or_else(|| not_found("schedule exception", id))?;
        let txn = self
            .db
            .begin()
            .await
            .map_err(internal_err("delete schedule exception"))?;
        exception::Entity::delete_by_id(id.to_owned())
            .exec(&txn)
            .await
            .map_err(internal_err("delete schedule exception"))?;
        self.bump_slot_versions(&txn, &[m.desk_id.as_str()])
            .await
            .map_err(internal_err("delete schedule exception"))?;
        txn.commit()
            .await
            .map_err(internal_err("delete schedule exception"))?;
        self.settle_slot_versions(&[m.desk_id.as_str()]).await;
        tracing::info!(exception_id = %id, "schedule exception deleted");
        Ok(m)
    }
}
