//! Closing a request other than by signing: decline, cancel, expiry; and reissuing a closed one.

use super::*;

impl Core {
    // --- decline, cancel, reissue, expiry ------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn close(
        &self,
        origin: &Origin,
        request_id: &str,
        signer_id: &str,
        to: Status,
        from: &[Status],
        reason: &str,
        event_type: &str,
    ) -> Result<Full, Error> {
        let now = self.now();
        let txn = self.db.begin().await.map_err(internal_err(event_type))?;
        let mut upd = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(to))
            .col_expr(request::Column::UpdatedAt, Expr::value(now))
            .filter(request::Column::Id.eq(request_id.to_owned()))
            .filter(request::Column::Status.is_in(from.iter().copied()));
        if !reason.is_empty() {
            upd = upd.col_expr(
                request::Column::DeclineReason,
                Expr::value(reason.to_owned()),
            );
        }
        let r = upd.exec(&txn).await.map_err(internal_err(event_type))?;
        if r.rows_affected != 1 {
            let _ = txn.rollback().await;
            let cur = self.get(request_id).await?;
            return Err(closed(cur.req.status));
        }
        let res: Result<(), sea_orm::DbErr> = async {
            if to == DECLINED && !signer_id.is_empty() {
                signer::Entity::update_many()
                    .col_expr(signer::Column::Status, Expr::value(DECLINED))
                    .filter(signer::Column::Id.eq(signer_id.to_owned()))
                    .exec(&txn)
                    .await?;
            }
            if to == EXPIRED {
                // Who had not signed did not sign in time: not left `pending`.
                signer::Entity::update_many()
                    .col_expr(signer::Column::Status, Expr::value(EXPIRED))
                    .filter(signer::Column::RequestId.eq(request_id.to_owned()))
                    .filter(signer::Column::Status.eq(PENDING))
                    .exec(&txn)
                    .await?;
            }
            self.void_codes(&txn, request_id).await?;
            let req = request::Entity::find_by_id(request_id.to_owned())
                .one(&txn)
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound(request_id.to_owned()))?;
            self.record(
                &txn,
                request_id,
                signer_id,
                to.as_str(),
                "ok",
                origin,
                reason,
            )
            .await?;
            self.announce(&txn, event_type, &req, to, signer_id, origin)
                .await?;
            self.add_job(&txn, "link", request_id).await
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(internal(event_type, e));
        }
        txn.commit().await.map_err(internal_err(event_type))?;
        self.outbox.notify();
        metrics::counter!("guichet_signature_requests_total", "status" => to.as_str()).increment(1);
        tracing::info!(signature_request_id = %request_id, status = to.as_str(), "signature request closed");
        self.get(request_id).await
    }

    #[tracing::instrument(name = "signature.decline", skip_all, fields(signature_request_id = %request_id))]
    pub async fn decline(
        &self,
        origin: &Origin,
        request_id: &str,
        signer_id: &str,
        reason: &str,
    ) -> Result<Full, Error> {
        let full = self.get(request_id).await?;
        let s = self.signer_of(&full, signer_id)?.clone();
        self.check_open(&full).await?;
        if s.status != PENDING {
            return Err(precondition(
                "SIGNER_DONE",
                "Vous avez déjà répondu à cette demande.",
            ));
        }
        let reason: String = reason.trim().chars().take(1000).collect();
        self.close(
            origin,
            request_id,
            &s.id,
            DECLINED,
            &[PENDING],
            &reason,
            "declined",
        )
        .await
    }

    #[tracing::instrument(name = "signature.cancel", skip_all, fields(signature_request_id = %id))]
    pub async fn cancel(&self, origin: &Origin, id: &str, reason: &str) -> Result<Full, Error> {
        self.get(id).await?;
        self.close(
            origin,
            id,
            "",
            CANCELLED,
            &[PENDING, LOCKED],
            reason.trim(),
            "cancelled",
        )
        .await
    }

    pub(super) async fn expire_one(&self, id: &str) -> Result<bool, Error> {
        match self
            .close(
                &Origin::system(),
                id,
                "",
                EXPIRED,
                &[PENDING, LOCKED],
                "",
                "expired",
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Refused { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Mark every request past its expiry as expired; safe with several
    /// replicas (each request is taken by a compare-and-set). Returns how many.
    pub async fn expire_due(&self) -> Result<usize, Error> {
        let due = request::Entity::find()
            .filter(request::Column::Status.is_in([PENDING, LOCKED]))
            .filter(request::Column::ExpireAt.lte(self.now()))
            .order_by_asc(request::Column::ExpireAt)
            .limit(100)
            .all(&self.db)
            .await
            .map_err(internal_err("expire"))?;
        let mut n = 0;
        for r in due {
            if self.expire_one(&r.id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    #[tracing::instrument(name = "signature.reissue", skip_all, fields(signature_request_id = %id))]
    pub async fn reissue(
        &self,
        origin: &Origin,
        id: &str,
        reason: &str,
        expire_at: Option<DateTime<Utc>>,
    ) -> Result<Full, Error> {
        let full = self.get(id).await?;
        let now = self.now();
        let new_expiry = expire_at.unwrap_or(full.req.expire_at);
        if new_expiry <= now {
            return Err(invalid_argument(
                "expire_time",
                "la demande est échue : donnez une nouvelle date d'expiration future",
            ));
        }
        let txn = self.db.begin().await.map_err(internal_err("reissue"))?;
        let r = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(PENDING))
            .col_expr(request::Column::ExpireAt, Expr::value(new_expiry))
            .col_expr(request::Column::UpdatedAt, Expr::value(now))
            .filter(request::Column::Id.eq(id.to_owned()))
            .filter(request::Column::Status.is_in([LOCKED, EXPIRED]))
            .exec(&txn)
            .await
            .map_err(internal_err("reissue"))?;
        if r.rows_affected != 1 {
            let _ = txn.rollback().await;
            return Err(precondition(
                "NOT_LOCKED",
                "Seule une demande bloquée ou échue peut être débloquée.",
            ));
        }
        let res: Result<(), sea_orm::DbErr> = async {
            // Signers an expiry closed may sign again.
            signer::Entity::update_many()
                .col_expr(signer::Column::Status, Expr::value(PENDING))
                .filter(signer::Column::RequestId.eq(id.to_owned()))
                .filter(signer::Column::Status.eq(EXPIRED))
                .exec(&txn)
                .await?;
            signer::Entity::update_many()
                .col_expr(signer::Column::CodesSent, Expr::value(0))
                .col_expr(
                    signer::Column::LastCodeAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(signer::Column::RequestId.eq(id.to_owned()))
                .filter(signer::Column::Status.eq(PENDING))
                .exec(&txn)
                .await?;
            self.void_codes(&txn, id).await?;
            let req = request::Entity::find_by_id(id.to_owned())
                .one(&txn)
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound(id.to_owned()))?;
            self.record(&txn, id, "", "reissued", "ok", origin, reason.trim())
                .await?;
            self.announce(&txn, "reissued", &req, PENDING, "", origin)
                .await?;
            self.add_job(&txn, "link", id).await
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(internal("reissue", e));
        }
        txn.commit().await.map_err(internal_err("reissue"))?;
        self.outbox.notify();
        tracing::info!(signature_request_id = %id, "signature request reissued");
        self.get(id).await
    }
}
