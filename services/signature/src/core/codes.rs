//! One-time codes: sending (with its pace and count limits), locking after too many tries, voiding.

use super::*;

impl Core {
    // --- codes -------------------------------------------------------------

    /// Expire the request now if its time is up; returns its status.
    pub(super) async fn check_open(&self, full: &Full) -> Result<(), Error> {
        if full.req.status == PENDING && full.req.expire_at <= self.now() {
            self.expire_one(&full.req.id).await?;
            return Err(closed(EXPIRED));
        }
        if full.req.status != PENDING {
            return Err(closed(full.req.status));
        }
        Ok(())
    }

    #[tracing::instrument(name = "signature.send_code", skip_all, fields(signature_request_id = %request_id, signer_id = %signer_id))]
    pub async fn send_code(
        &self,
        origin: &Origin,
        request_id: &str,
        signer_id: &str,
        resend: bool,
    ) -> Result<Sent, Error> {
        let full = self.get(request_id).await?;
        let s = self.signer_of(&full, signer_id)?.clone();
        self.check_open(&full).await?;
        if s.status != PENDING {
            return Err(precondition("SIGNER_DONE", "Ce signataire a déjà répondu."));
        }
        let now = self.now();
        let interval = Duration::seconds(self.config.resend_interval_secs.into());
        let kind = if resend { "code_resent" } else { "code_sent" };
        if let Some(last) = s.last_code_at
            && last + interval > now
        {
            let wait = Ord::max((last + interval - now).num_seconds(), 1);
            self.record(&self.db, request_id, &s.id, kind, "throttled", origin, "")
                .await
                .map_err(internal_err("record throttle"))?;
            metrics::counter!("guichet_signature_codes_throttled_total").increment(1);
            return Err(Error::Exhausted(format!(
                "Un code vient d'être envoyé : patientez {wait} secondes avant d'en demander un nouveau."
            )));
        }
        let max = self.config.max_codes_per_signer as i32;
        if s.codes_sent >= max {
            self.lock(request_id, &s.id, origin, "codes_limit").await?;
            return Err(closed(LOCKED));
        }
        let code = otp::new_code().map_err(os_rng_err)?;
        let code_id = new_id();
        let expire_at = now + Duration::minutes(self.config.code_ttl_minutes.into());
        let txn = self.db.begin().await.map_err(internal_err("send code"))?;
        let res: Result<bool, sea_orm::DbErr> = async {
            // Compare-and-set on the count: two concurrent sends cannot both pass.
            let r = signer::Entity::update_many()
                .col_expr(signer::Column::CodesSent, Expr::value(s.codes_sent + 1))
                .col_expr(signer::Column::LastCodeAt, Expr::value(now))
                .filter(signer::Column::Id.eq(s.id.clone()))
                .filter(signer::Column::CodesSent.eq(s.codes_sent))
                .filter(signer::Column::Status.eq(PENDING))
                .exec(&txn)
                .await?;
            if r.rows_affected != 1 {
                return Ok(false);
            }
            code::Entity::update_many()
                .col_expr(code::Column::Status, Expr::value(CodeStatus::Superseded))
                .filter(code::Column::SignerId.eq(s.id.clone()))
                .filter(code::Column::Status.eq(CODE_ACTIVE))
                .exec(&txn)
                .await?;
            code::ActiveModel {
                id: Set(code_id.clone()),
                signer_id: Set(s.id.clone()),
                request_id: Set(request_id.to_owned()),
                hash: Set(otp::hash_code(&self.config.code_secret, &code_id, &code)),
                created_at: Set(now),
                expire_at: Set(expire_at),
                attempts: Set(0),
                status: Set(CODE_ACTIVE),
            }
            .insert(&txn)
            .await?;
            self.record(
                &txn,
                request_id,
                &s.id,
                kind,
                "ok",
                origin,
                &format!(
                    "code {}/{} envoyé par SMS, valable jusqu'à {}",
                    s.codes_sent + 1,
                    max,
                    rfc3339(expire_at)
                ),
            )
            .await?;
            self.stage_sms(&txn, &full.req, &s, &code_id, &code, expire_at)
                .await?;
            self.announce(&txn, "code_sent", &full.req, PENDING, &s.id, origin)
                .await?;
            Ok(true)
        }
        .await;
        match res {
            Ok(true) => txn.commit().await.map_err(internal_err("send code"))?,
            Ok(false) => {
                let _ = txn.rollback().await;
                return Err(Error::Conflict(
                    "Un autre envoi de code est en cours : réessayez.".into(),
                ));
            }
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(internal("send code", e));
            }
        }
        self.outbox.notify();
        metrics::counter!("guichet_signature_codes_sent_total").increment(1);
        tracing::info!(signature_request_id = %request_id, signer_id = %s.id, code_id = %code_id, "signature code sent");
        let sent = (s.codes_sent + 1) as u32;
        Ok(Sent {
            code_expire_at: expire_at,
            next_send_at: now + interval,
            codes_sent: sent,
            codes_left: self.config.max_codes_per_signer.saturating_sub(sent),
        })
    }

    pub(super) async fn stage_sms(
        &self,
        conn: &impl ConnectionTrait,
        req: &request::Model,
        s: &signer::Model,
        code_id: &str,
        code: &str,
        expire_at: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let minutes = self.config.code_ttl_minutes.to_string();
        let link = self.signing_url(s);
        let town = self.config.town.name.clone();
        let short = self.config.town.sms_name().to_owned();
        // The same sentence as the `signature-code` template, for a
        // provider that sends `text` as is.
        let text = format!(
            "Mairie de {short} : votre code pour signer \"{}\" est {code} (valable {minutes} min). Ne le donnez à personne. Signez ici : {link}",
            req.title
        );
        let variables: HashMap<String, String> = [
            ("code", code.to_owned()),
            ("document", req.title.clone()),
            ("minutes", minutes),
            ("town", town),
            ("town_short", short),
            ("link", link),
            ("text", text),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let id = format!("signature-code-{code_id}");
        let msg = NotificationRequest {
            id: id.clone(),
            target: Some(notification_request::Target::Phone(s.phone.clone())),
            template: "signature-code".into(),
            variables,
            dossier_id: req.dossier_id.clone(),
            requested_by: "signature".into(),
            not_after: Some(timestamp(expire_at)),
            ..Default::default()
        };
        let staged = self.outbox.notification_request(
            "sms",
            &msg,
            format!("signature-requests/{}", req.id),
            self.now(),
        );
        self.outbox.stage(conn, &staged).await
    }

    pub(super) async fn lock(
        &self,
        request_id: &str,
        signer_id: &str,
        origin: &Origin,
        why: &str,
    ) -> Result<(), Error> {
        let txn = self.db.begin().await.map_err(internal_err("lock"))?;
        let locked = match self.lock_in(&txn, request_id, signer_id, origin, why).await {
            Ok(l) => l,
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(internal("lock", e));
            }
        };
        txn.commit().await.map_err(internal_err("lock"))?;
        if locked {
            self.locked(request_id, why);
        }
        Ok(())
    }

    /// Lock a pending request inside `txn`; false when it was not pending.
    pub(super) async fn lock_in(
        &self,
        txn: &impl ConnectionTrait,
        request_id: &str,
        signer_id: &str,
        origin: &Origin,
        why: &str,
    ) -> Result<bool, sea_orm::DbErr> {
        let r = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(LOCKED))
            .col_expr(request::Column::UpdatedAt, Expr::value(self.now()))
            .filter(request::Column::Id.eq(request_id.to_owned()))
            .filter(request::Column::Status.eq(PENDING))
            .exec(txn)
            .await?;
        if r.rows_affected != 1 {
            return Ok(false);
        }
        let req = request::Entity::find_by_id(request_id.to_owned())
            .one(txn)
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound(request_id.to_owned()))?;
        self.void_codes(txn, request_id).await?;
        self.record(txn, request_id, signer_id, "locked", why, origin, "")
            .await?;
        self.announce(txn, "locked", &req, LOCKED, signer_id, origin)
            .await?;
        self.add_job(txn, "link", request_id).await?;
        Ok(true)
    }

    /// After a lock committed.
    pub(super) fn locked(&self, request_id: &str, why: &str) {
        self.outbox.notify();
        metrics::counter!("guichet_signature_locks_total", "reason" => why.to_owned()).increment(1);
        tracing::info!(signature_request_id = %request_id, reason = why, "signature request locked");
    }

    pub(super) async fn void_codes(
        &self,
        conn: &impl ConnectionTrait,
        request_id: &str,
    ) -> Result<(), sea_orm::DbErr> {
        code::Entity::update_many()
            .col_expr(code::Column::Status, Expr::value(CodeStatus::Void))
            .filter(code::Column::RequestId.eq(request_id.to_owned()))
            .filter(code::Column::Status.eq(CODE_ACTIVE))
            .exec(conn)
            .await?;
        Ok(())
    }
}
