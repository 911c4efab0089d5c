//! Data protection: bookings and waiting-list entries deleted once their retention ends.

use super::*;

impl Core {
    /// Data protection: delete bookings that ended more than
    /// `retention_days` ago (contact details included) with their claims,
    /// numbers, keys and jobs, and expired waiting-list entries. Returns
    /// how many bookings went.
    pub async fn purge_expired(&self) -> Result<u64, sea_orm::DbErr> {
        if self.config.retention_days == 0 {
            return Ok(0);
        }
        let cutoff = self.now() - Duration::days(i64::from(self.config.retention_days));
        let ids: Vec<String> = booking::Entity::find()
            .select_only()
            .column(booking::Column::Id)
            .filter(booking::Column::EndAt.lt(cutoff))
            .limit(1000)
            .into_tuple()
            .all(&self.db)
            .await?;
        if ids.is_empty() {
            waiter::Entity::delete_many()
                .filter(waiter::Column::BeforeAt.lt(cutoff))
                .exec(&self.db)
                .await?;
            return Ok(0);
        }
        let txn = self.db.begin().await?;
        for (table, col) in [
            ("slot_claims", "booking_id"),
            ("booking_applications", "booking_id"),
            ("booking_actions", "booking_id"),
            (durable::TABLE, "subject"),
        ] {
            let q = Query::delete()
                .from_table(a(table))
                .and_where(Expr::col(a(col)).is_in(ids.clone()))
                .to_owned();
            txn.execute(&q).await?;
        }
        let gone = booking::Entity::delete_many()
            .filter(booking::Column::Id.is_in(ids))
            .exec(&txn)
            .await?
            .rows_affected;
        waiter::Entity::delete_many()
            .filter(waiter::Column::BeforeAt.lt(cutoff))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        metrics::counter!("guichet_appointment_purged_total").increment(gone);
        tracing::info!(purged = gone, "expired bookings purged");
        Ok(gone)
    }
}
