//! Creating a signature request: its document, signers and first codes, idempotent on `request_id`.

use super::*;

impl Core {
    // --- create ----------------------------------------------------------

    pub(super) async fn by_request_id(&self, rid: &str) -> Result<Option<Full>, Error> {
        let r = request::Entity::find()
            .filter(request::Column::RequestId.eq(rid.to_owned()))
            .one(&self.db)
            .await
            .map_err(internal_err("signature request by request_id"))?;
        match r {
            Some(r) => Ok(Some(self.full(r).await?)),
            None => Ok(None),
        }
    }

    #[tracing::instrument(name = "signature.create", skip_all, fields(dossier_id = %nr.dossier_id))]
    pub async fn create(&self, origin: &Origin, nr: NewRequest) -> Result<Full, Error> {
        if let Some(rid) = &nr.request_id
            && let Some(f) = self.by_request_id(rid).await?
        {
            return Ok(f);
        }
        let (sha, size) = match &nr.document {
            DocumentSource::Stored(sha) => {
                let bytes = self.objects.get(sha).await.map_err(|e| match e {
                    ObjectError::NotFound(_) => invalid_argument(
                        "document_sha256",
                        "aucun document de ce SHA-256 dans le stockage",
                    ),
                    ObjectError::BadAddress(_) => invalid_argument(
                        "document_sha256",
                        "doit être un SHA-256 hexadécimal en minuscules",
                    ),
                    other => internal("read document", other),
                })?;
                pdf::check(&bytes)
                    .map_err(|e| invalid_argument("document_sha256", e.to_string()))?;
                (sha.clone(), bytes.len() as u64)
            }
            DocumentSource::Uploaded(bytes) => {
                if bytes.len() as u64 > self.config.max_document_bytes {
                    return Err(invalid_argument(
                        "document_content",
                        format!(
                            "le document dépasse la taille maximale de {} octets",
                            self.config.max_document_bytes
                        ),
                    ));
                }
                pdf::check(bytes)
                    .map_err(|e| invalid_argument("document_content", e.to_string()))?;
                let sha = self
                    .objects
                    .put(bytes)
                    .await
                    .map_err(internal_err("store document"))?;
                (sha, bytes.len() as u64)
            }
        };
        let now = self.now();
        let expire_at = nr
            .expire_at
            .unwrap_or(now + Duration::days(self.config.default_expiry_days.into()));
        if expire_at <= now {
            return Err(invalid_argument("expire_time", "doit être dans le futur"));
        }
        let id = new_id();
        let req = request::Model {
            id: id.clone(),
            request_id: nr.request_id.clone(),
            dossier_id: nr.dossier_id.clone(),
            title: nr.title.clone(),
            process_template: nr.process_template.clone(),
            document_sha256: sha,
            document_size: size as i64,
            consent_text: self.config.consent_or_default(&nr.consent_text),
            status: PENDING,
            expire_at,
            created_at: now,
            updated_at: now,
            completed_at: None,
            creator: origin.actor.clone(),
            signed_sha256: None,
            evidence_sha256: None,
            key_id: None,
            decline_reason: None,
        };
        let txn = self.db.begin().await.map_err(internal_err("create"))?;
        let res: Result<(), sea_orm::DbErr> = async {
            req.clone().into_active_model().insert(&txn).await?;
            for (i, s) in nr.signers.iter().enumerate() {
                signer::ActiveModel {
                        id: Set(new_id()),
                        request_id: Set(id.clone()),
                        position: Set(i as i32),
                        name: Set(s.name.clone()),
                        phone: Set(s.phone.as_str().to_owned()),
                        token: Set(
                            otp::new_token().map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
                        ),
                        status: Set(PENDING),
                        signed_at: Set(None),
                        codes_sent: Set(0),
                        last_code_at: Set(None),
                        sign_ip: Set(None),
                        sign_user_agent: Set(None),
                    }
                    .insert(&txn)
                    .await?;
            }
            self.record(
                &txn,
                &id,
                "",
                "created",
                "ok",
                origin,
                &format!(
                    "{} signataire(s), document {}",
                    nr.signers.len(),
                    req.document_sha256
                ),
            )
            .await?;
            self.announce(&txn, "request_created", &req, PENDING, "", origin)
                .await?;
            self.add_job(&txn, "link", &id).await?;
            Ok(())
        }
        .await;
        if let Err(e) = res {
            let _ = txn.rollback().await;
            return Err(internal("create", e));
        }
        match txn.commit().await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => {
                if let Some(rid) = &nr.request_id
                    && let Some(f) = self.by_request_id(rid).await?
                {
                    return Ok(f);
                }
                return Err(internal("create", e));
            }
            Err(e) => return Err(internal("create", e)),
        }
        self.outbox.notify();
        metrics::counter!("guichet_signature_requests_total", "status" => PENDING.as_str())
            .increment(1);
        tracing::info!(signature_request_id = %id, dossier_id = %nr.dossier_id, signers = nr.signers.len(), "signature request created");
        let full = self.get(&id).await?;
        if nr.send_codes {
            for s in &full.signers {
                self.send_code(origin, &id, &s.id, false).await?;
            }
        }
        self.get(&id).await
    }
}
