//! Completion: the signed PDF, the sealed and time-stamped evidence, and reading them back.

use super::*;

impl Core {
    // --- completion ------------------------------------------------------------

    /// Complete the request when every signer has signed: signed PDF,
    /// sealed evidence, status `signed`. Idempotent; the first caller wins.
    #[tracing::instrument(name = "signature.complete", skip_all, fields(signature_request_id = %id))]
    pub async fn finish_if_complete(&self, id: &str) -> Result<bool, Error> {
        let full = self.get(id).await?;
        if full.req.status != PENDING || full.signers.iter().any(|s| s.status != SIGNED) {
            return Ok(false);
        }
        let original = self
            .objects
            .get(&full.req.document_sha256)
            .await
            .map_err(internal_err("read original"))?;
        let now = self.now();
        let page = pdf::SignaturePage {
            title: full.req.title.clone(),
            town: self.config.town.hall(),
            original_sha256: full.req.document_sha256.clone(),
            request_id: full.req.id.clone(),
            signers: full
                .signers
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        otp::mask_phone(&s.phone),
                        s.signed_at.map(paris_text).unwrap_or_default(),
                    )
                })
                .collect(),
            consent_text: full.req.consent_text.clone(),
            key_id: self.keys.key_id.clone(),
        };
        let signed = pdf::append_signature_page(&original, &page)
            .map_err(|e| internal("signature page", e))?;
        let signed_sha = self
            .objects
            .put(&signed)
            .await
            .map_err(internal_err("store signed pdf"))?;
        let (events, _) = self.events(id, 0, 10_000).await?;
        let evidence = self.evidence(&full, &events, &signed_sha, signed.len(), now);
        let sealed = self.keys.seal(evidence);
        let sealed = self.time_stamp(id, sealed).await;
        let evidence_sha = self
            .objects
            .put(&sealed)
            .await
            .map_err(internal_err("store evidence"))?;
        let txn = self.db.begin().await.map_err(internal_err("complete"))?;
        let r = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(SIGNED))
            .col_expr(request::Column::UpdatedAt, Expr::value(now))
            .col_expr(request::Column::CompletedAt, Expr::value(now))
            .col_expr(
                request::Column::SignedSha256,
                Expr::value(signed_sha.clone()),
            )
            .col_expr(
                request::Column::EvidenceSha256,
                Expr::value(evidence_sha.clone()),
            )
            .col_expr(
                request::Column::KeyId,
                Expr::value(self.keys.key_id.clone()),
            )
            .filter(request::Column::Id.eq(id.to_owned()))
            .filter(request::Column::Status.eq(PENDING))
            .exec(&txn)
            .await
            .map_err(internal_err("complete"))?;
        if r.rows_affected != 1 {
            let _ = txn.rollback().await;
            return Ok(false);
        }
        let res: Result<(), sea_orm::DbErr> = async {
            let req = request::Entity::find_by_id(id.to_owned())
                .one(&txn)
                .await?
                .ok_or_else(|| sea_orm::DbErr::RecordNotFound(id.to_owned()))?;
            self.record(
                &txn,
                id,
                "",
                "completed",
                "ok",
                &Origin::system(),
                &format!("PDF signé {signed_sha}, preuve {evidence_sha}"),
            )
            .await?;
            self.announce(&txn, "completed", &req, SIGNED, "", &Origin::system())
                .await?;
            self.add_job(&txn, "completed", id).await
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(internal("complete", e));
        }
        txn.commit().await.map_err(internal_err("complete"))?;
        self.outbox.notify();
        metrics::counter!("guichet_signature_requests_total", "status" => SIGNED.as_str())
            .increment(1);
        tracing::info!(signature_request_id = %id, "signature request completed");
        Ok(true)
    }

    pub(super) fn evidence(
        &self,
        full: &Full,
        events: &[event::Model],
        signed_sha: &str,
        signed_size: usize,
        now: DateTime<Utc>,
    ) -> Value {
        let r = &full.req;
        let signers: Vec<Value> = full
            .signers
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "position": s.position,
                    "name": s.name,
                    "phone_masked": otp::mask_phone(&s.phone),
                    "signed_at": s.signed_at.map(rfc3339),
                    "ip": s.sign_ip,
                    "user_agent": s.sign_user_agent,
                    "verification": "code à usage unique vérifié (HMAC-SHA256, comparaison à temps constant)",
                })
            })
            .collect();
        let events: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({
                    "seq": e.id,
                    "at": rfc3339(e.at),
                    "kind": e.kind,
                    "outcome": e.outcome,
                    "signer_id": e.signer_id,
                    "ip": e.ip,
                    "user_agent": e.user_agent,
                    "actor": e.actor,
                    "detail": e.detail,
                })
            })
            .collect();
        json!({
            "format": "guichet-signature-evidence/1",
            "key_id": self.keys.key_id,
            "sealed_at": rfc3339(now),
            "town": self.config.town.name,
            "method": "signature électronique simple (eIDAS) par code à usage unique envoyé par SMS",
            "request": {
                "id": r.id,
                "dossier_id": r.dossier_id,
                "title": r.title,
                "process_template": r.process_template,
                "creator": r.creator,
                "created_at": rfc3339(r.created_at),
                "expire_at": rfc3339(r.expire_at),
                "completed_at": rfc3339(now),
            },
            "document": {
                "original_sha256": r.document_sha256,
                "original_size": r.document_size,
                "signed_sha256": signed_sha,
                "signed_size": signed_size,
                "signature_page": "page de signature ajoutée en dernière page",
            },
            "consent_text": r.consent_text,
            "signers": signers,
            "events": events,
            "code_policy": {
                "digits": 6,
                "ttl_minutes": self.config.code_ttl_minutes,
                "max_attempts_per_code": self.config.max_attempts_per_code,
                "max_codes_per_signer": self.config.max_codes_per_signer,
            },
            "timestamp": Value::Null,
        })
    }

    /// Time-stamp a sealed record with the configured authority (RFC
    /// 3161, over the SHA-256 of the seal's signature). The authority being
    /// away never blocks a signature: the record is kept sealed without a
    /// token, which is logged and counted.
    pub(super) async fn time_stamp(&self, id: &str, sealed: Vec<u8>) -> Vec<u8> {
        let url = self.config.tsa_url.as_str();
        if url.is_empty() {
            return sealed;
        }
        let Some(signature) = crate::seal::seal_signature(&sealed) else {
            return sealed;
        };
        let hash: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            &signature,
        ))
        .into();
        match crate::tsa::stamp(&self.http, url, &hash).await {
            Ok((token, info)) => {
                let ts = serde_json::json!({
                    "standard": "RFC 3161",
                    "tsa_url": url,
                    "hash_algorithm": "sha256",
                    "covers": "seal.signature",
                    "imprint_sha256": hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    "gen_time": rfc3339(info.gen_time),
                    "serial": info.serial_hex,
                    "token": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &token),
                });
                metrics::counter!("guichet_signature_timestamps_total", "outcome" => "ok")
                    .increment(1);
                tracing::info!(signature_request_id = id, "evidence time-stamped");
                crate::seal::with_timestamp(&sealed, ts).unwrap_or(sealed)
            }
            Err(error) => {
                metrics::counter!("guichet_signature_timestamps_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(signature_request_id = id, %error, "evidence not time-stamped");
                sealed
            }
        }
    }

    pub async fn evidence_bytes(&self, id: &str) -> Result<(Full, Vec<u8>), Error> {
        let full = self.get(id).await?;
        let Some(sha) = full.req.evidence_sha256.clone() else {
            return Err(precondition(
                "NOT_SIGNED",
                "La preuve n'existe qu'une fois le document signé par tous.",
            ));
        };
        let bytes = self
            .objects
            .get(&sha)
            .await
            .map_err(internal_err("read evidence"))?;
        Ok((full, bytes))
    }

    /// The request whose original or signed PDF has this hash.
    pub async fn by_document(&self, sha: &str) -> Result<Option<request::Model>, Error> {
        request::Entity::find()
            .filter(
                request::Column::SignedSha256
                    .eq(sha.to_owned())
                    .or(request::Column::DocumentSha256.eq(sha.to_owned())),
            )
            .filter(request::Column::Status.eq(SIGNED))
            .order_by_desc(request::Column::CompletedAt)
            .one(&self.db)
            .await
            .map_err(internal_err("request by document"))
    }
}
