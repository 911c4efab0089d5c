//! Confirming a code: the signer's signature, and the request's completion when it was the last.

use super::*;

impl Core {
    #[tracing::instrument(name = "signature.confirm", skip_all, fields(signature_request_id = %request_id, signer_id = %signer_id))]
    pub async fn confirm(
        &self,
        origin: &Origin,
        request_id: &str,
        signer_id: &str,
        submitted: &str,
    ) -> Result<Confirmed, Error> {
        let submitted = submitted.trim();
        if submitted.len() != 6 || !submitted.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid_argument("code", "le code comporte 6 chiffres"));
        }
        let full = self.get(request_id).await?;
        let s = self.signer_of(&full, signer_id)?.clone();
        self.check_open(&full).await?;
        if s.status != PENDING {
            return Err(precondition(
                "SIGNER_DONE",
                "Vous avez déjà répondu à cette demande.",
            ));
        }
        let max = self.config.max_attempts_per_code as i32;
        let outcome = |o: &'static str| {
            metrics::counter!("guichet_signature_attempts_total", "outcome" => o).increment(1);
        };
        // A few rounds: a lost compare-and-set re-reads the code.
        for _ in 0..5 {
            let c = code::Entity::find()
                .filter(code::Column::SignerId.eq(s.id.clone()))
                .filter(code::Column::Status.eq(CODE_ACTIVE))
                .order_by_desc(code::Column::CreatedAt)
                .one(&self.db)
                .await
                .map_err(internal_err("confirm"))?;
            let Some(c) = c else {
                // Used a moment ago by a concurrent confirmation?
                let used = code::Entity::find()
                    .filter(code::Column::SignerId.eq(s.id.clone()))
                    .filter(code::Column::Status.eq(CodeStatus::Used))
                    .count(&self.db)
                    .await
                    .map_err(internal_err("confirm"))?;
                let (o, msg) = if used > 0 {
                    ("already_used", "Ce code a déjà été utilisé.")
                } else {
                    (
                        "no_code",
                        "Demandez d'abord un code : aucun code valide n'a été envoyé.",
                    )
                };
                outcome(o);
                self.record(&self.db, request_id, &s.id, "attempt", o, origin, "")
                    .await
                    .map_err(internal_err("confirm"))?;
                return Err(precondition("NO_CODE", msg));
            };
            let now = self.now();
            if c.expire_at <= now {
                code::Entity::update_many()
                    .col_expr(code::Column::Status, Expr::value(CodeStatus::Expired))
                    .filter(code::Column::Id.eq(c.id.clone()))
                    .filter(code::Column::Status.eq(CODE_ACTIVE))
                    .exec(&self.db)
                    .await
                    .map_err(internal_err("confirm"))?;
                outcome("expired_code");
                self.record(
                    &self.db,
                    request_id,
                    &s.id,
                    "attempt",
                    "expired_code",
                    origin,
                    "",
                )
                .await
                .map_err(internal_err("confirm"))?;
                return Err(precondition(
                    "CODE_EXPIRED",
                    "Ce code a expiré : demandez-en un nouveau.",
                ));
            }
            if otp::code_matches(&self.config.code_secret, &c.id, submitted, &c.hash) {
                let txn = self.db.begin().await.map_err(internal_err("confirm"))?;
                let won = code::Entity::update_many()
                    .col_expr(code::Column::Status, Expr::value(CodeStatus::Used))
                    .filter(code::Column::Id.eq(c.id.clone()))
                    .filter(code::Column::Status.eq(CODE_ACTIVE))
                    .filter(code::Column::Attempts.lt(max))
                    .exec(&txn)
                    .await
                    .map_err(internal_err("confirm"))?
                    .rows_affected
                    == 1;
                if !won {
                    let _ = txn.rollback().await;
                    continue;
                }
                let res: Result<u64, sea_orm::DbErr> = async {
                    let r = signer::Entity::update_many()
                        .col_expr(signer::Column::Status, Expr::value(SIGNED))
                        .col_expr(signer::Column::SignedAt, Expr::value(now))
                        .col_expr(signer::Column::SignIp, Expr::value(origin.ip.clone()))
                        .col_expr(
                            signer::Column::SignUserAgent,
                            Expr::value(origin.user_agent.chars().take(512).collect::<String>()),
                        )
                        .filter(signer::Column::Id.eq(s.id.clone()))
                        .filter(signer::Column::Status.eq(PENDING))
                        .exec(&txn)
                        .await?;
                    if r.rows_affected != 1 {
                        return Err(sea_orm::DbErr::Custom("signer no longer pending".into()));
                    }
                    self.record(
                        &txn,
                        request_id,
                        &s.id,
                        "attempt",
                        "ok",
                        origin,
                        &format!("code valide (tentative {}/{})", c.attempts + 1, max),
                    )
                    .await?;
                    self.record(
                        &txn,
                        request_id,
                        &s.id,
                        "signed",
                        "ok",
                        origin,
                        "consentement exprimé et code vérifié",
                    )
                    .await?;
                    self.announce(&txn, "signer_signed", &full.req, PENDING, &s.id, origin)
                        .await?;
                    let left = signer::Entity::find()
                        .filter(signer::Column::RequestId.eq(request_id.to_owned()))
                        .filter(signer::Column::Status.ne(SIGNED))
                        .count(&txn)
                        .await?;
                    if left == 0 {
                        // Crash safety: the job runner completes it if we do not.
                        self.add_job(&txn, "finish", request_id).await?;
                    }
                    Ok(left)
                }
                .await;
                if let Err(e) = res {
                    let _ = txn.rollback().await;
                    return Err(internal("confirm", e));
                }
                txn.commit().await.map_err(internal_err("confirm"))?;
                self.outbox.notify();
                outcome("ok");
                tracing::info!(signature_request_id = %request_id, signer_id = %s.id, "signer signed");
                if self.finish_if_complete(request_id).await? {
                    // Carry it to the dossier now; the job runner retries on failure.
                    if let Err(error) = self.run_due_jobs().await {
                        tracing::warn!(%error, "signature jobs failed, will retry");
                    }
                }
                return Ok(Confirmed {
                    signed: true,
                    attempts_left: 0,
                    full: self.get(request_id).await?,
                });
            }
            // Wrong code: count the attempt (compare-and-set on the counter).
            let attempts = c.attempts + 1;
            let txn = self.db.begin().await.map_err(internal_err("confirm"))?;
            let exhausted = attempts >= max;
            let mut upd = code::Entity::update_many()
                .col_expr(code::Column::Attempts, Expr::value(attempts))
                .filter(code::Column::Id.eq(c.id.clone()))
                .filter(code::Column::Status.eq(CODE_ACTIVE))
                .filter(code::Column::Attempts.eq(c.attempts));
            if exhausted {
                upd = upd.col_expr(code::Column::Status, Expr::value(CodeStatus::Exhausted));
            }
            let counted = upd
                .exec(&txn)
                .await
                .map_err(internal_err("confirm"))?
                .rows_affected
                == 1;
            if !counted {
                let _ = txn.rollback().await;
                continue;
            }
            // The attempt and, on the last one, the lock: one transaction.
            let res: Result<(), sea_orm::DbErr> = async {
                self.record(
                    &txn,
                    request_id,
                    &s.id,
                    "attempt",
                    "wrong_code",
                    origin,
                    &format!("code erroné (tentative {attempts}/{max})"),
                )
                .await?;
                if exhausted {
                    self.lock_in(&txn, request_id, &s.id, origin, "attempts_limit")
                        .await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = res {
                let _ = txn.rollback().await;
                return Err(internal("confirm", e));
            }
            txn.commit().await.map_err(internal_err("confirm"))?;
            outcome("wrong_code");
            if exhausted {
                self.locked(request_id, "attempts_limit");
                return Err(closed(LOCKED));
            }
            return Ok(Confirmed {
                signed: false,
                attempts_left: (max - attempts) as u32,
                full: self.get(request_id).await?,
            });
        }
        Err(Error::Conflict(
            "Trop de confirmations simultanées : réessayez.".into(),
        ))
    }
}
