//! The durable jobs that carry a request's changes to the dossier role.

use super::*;

impl Core {
    // --- jobs ----------------------------------------------------------------

    /// Run due jobs (dossier link status, signed document and transition,
    /// unfinished completions). Each job is leased by a compare-and-set on
    /// its due time, so replicas do not run it twice at once.
    pub async fn run_due_jobs(&self) -> Result<usize, sea_orm::DbErr> {
        let now = self.now();
        let due = job::Entity::find()
            .filter(job::Column::Done.eq(false))
            .filter(job::Column::DueAt.lte(now))
            .order_by_asc(job::Column::DueAt)
            .order_by_asc(job::Column::Id)
            .limit(100)
            .all(&self.db)
            .await?;
        let mut handled = 0;
        for j in due {
            let lease = job::Entity::update_many()
                .col_expr(job::Column::DueAt, Expr::value(now + Duration::seconds(60)))
                .filter(job::Column::Id.eq(j.id.clone()))
                .filter(job::Column::Done.eq(false))
                .filter(job::Column::DueAt.eq(j.due_at))
                .exec(&self.db)
                .await?;
            if lease.rows_affected != 1 {
                continue;
            }
            let res = self.run_job(&j).await;
            let mut am = j.clone().into_active_model();
            match res {
                Ok(()) => {
                    handled += 1;
                    am.done = Set(true);
                    am.last_error = Set(None);
                }
                Err(error)
                    if matches!(
                        error.code(),
                        Code::NotFound | Code::InvalidArgument | Code::PermissionDenied
                    ) =>
                {
                    // Retrying cannot help (e.g. an unknown dossier).
                    tracing::error!(job_id = %j.id, kind = %j.kind, %error, "signature job failed for good");
                    am.done = Set(true);
                    am.last_error = Set(Some(error.to_string()));
                }
                Err(error) => {
                    let attempts = j.attempts + 1;
                    let backoff = Duration::seconds(2i64.pow(Ord::min(attempts, 9) as u32));
                    tracing::warn!(job_id = %j.id, kind = %j.kind, attempts, %error, "signature job failed, will retry");
                    am.attempts = Set(attempts);
                    am.due_at = Set(now + backoff);
                    am.last_error = Set(Some(error.to_string()));
                }
            }
            am.update(&self.db).await?;
        }
        Ok(handled)
    }

    #[tracing::instrument(name = "signature.job", skip_all, fields(signature_request_id = %j.request_id, job_kind = %j.kind))]
    pub(super) async fn run_job(&self, j: &job::Model) -> Result<(), Status> {
        let full = self.get(&j.request_id).await?;
        let r = &full.req;
        match j.kind.as_str() {
            "link" => {
                if r.dossier_id.is_empty() {
                    return Ok(());
                }
                self.dossier.link(&r.dossier_id, &r.id, &r.status).await
            }
            "finish" => self.finish_if_complete(&r.id).await.map(|_| ()),
            "completed" => {
                if r.dossier_id.is_empty() {
                    return Ok(());
                }
                self.dossier.link(&r.dossier_id, &r.id, SIGNED).await?;
                if let Some(sha) = &r.signed_sha256 {
                    let size = self
                        .objects
                        .get(sha)
                        .await
                        .map_err(internal_err("read signed pdf"))?
                        .len() as u64;
                    let name = format!("{}-signe.pdf", slug(&r.title));
                    self.dossier
                        .add_document(&r.dossier_id, &name, sha, size)
                        .await?;
                }
                let moved = self
                    .dossier
                    .advance(&r.dossier_id, &format!("signature-{}-completed", r.id))
                    .await?;
                tracing::info!(signature_request_id = %r.id, dossier_id = %r.dossier_id, to_state = ?moved, "dossier advanced after signature");
                Ok(())
            }
            other => {
                tracing::error!(kind = other, "unknown signature job kind");
                Ok(())
            }
        }
    }
}
