//! The durable jobs that carry a request's changes to the dossier role.

use super::*;

/// Signature's jobs: delays from 2 s doubling up to 512 s, given up after
/// 100 failed runs (about 13 hours), 100 taken per pass.
fn job_policy() -> durable::Policy {
    durable::Policy {
        max_delay: std::time::Duration::from_secs(512),
        ..durable::Policy::default()
    }
}

impl Core {
    // --- jobs ----------------------------------------------------------------

    /// Run due jobs (dossier link status, signed document and transition,
    /// unfinished completions). Each job is leased, so replicas do not run
    /// it twice at once; a job the dossier role refuses for good (unknown
    /// dossier) is given up, others are retried with backoff.
    pub async fn run_due_jobs(&self) -> Result<usize, sea_orm::DbErr> {
        let runner = durable::Runner::new(self.db.clone(), "signature", job_policy());
        runner
            .run_due(self.now(), |j| async move { self.run_job(&j).await })
            .await
    }

    #[tracing::instrument(name = "signature.job", skip_all, fields(signature_request_id = %j.subject, job_kind = %j.kind))]
    pub(super) async fn run_job(&self, j: &durable::Job) -> Result<(), Error> {
        let full = self.get(&j.subject).await?;
        let r = &full.req;
        match j.kind.as_str() {
            "link" => {
                if r.dossier_id.is_empty() {
                    return Ok(());
                }
                self.dossier
                    .link(&r.dossier_id, &r.id, r.status.as_str())
                    .await?;
                Ok(())
            }
            "finish" => self.finish_if_complete(&r.id).await.map(|_| ()),
            "completed" => {
                if r.dossier_id.is_empty() {
                    return Ok(());
                }
                self.dossier
                    .link(&r.dossier_id, &r.id, SIGNED.as_str())
                    .await?;
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
