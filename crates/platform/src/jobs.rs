//! Durable jobs: work a role must carry out after a commit (tell the
//! dossier role, declare to a national API, send a reminder at its hour),
//! written in the same transaction as the change that needs it and retried
//! until it succeeds or is given up.
//!
//! Every role that has jobs owns a `durable_jobs` table in its own database
//! ([`create_table`] in its migrations). A runner takes a due job with a
//! lease: a compare-and-set that moves its `next_run_at` past the lease, so
//! two replicas never run the same job at once (and a replica that dies
//! mid-job only delays it by the lease). A failure is classified
//! ([`crate::retry`]): permanent ones are given up at once, transient ones
//! run again after an exponential backoff (`backon`), until the policy's
//! attempt bound gives them up too. A given-up job keeps its last error.

use std::fmt::Display;
use std::future::Future;

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, ColumnDef, Expr, Index, IndexCreateStatement, Table, TableCreateStatement,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
};

use crate::retry::{Class, Classify};

pub use entity::Model as Job;

/// The table's name in every role database.
pub const TABLE: &str = "durable_jobs";

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "durable_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// What to do; the role's runner dispatches on it.
        pub kind: String,
        /// The record the job is about (a booking, a signature request):
        /// jobs are cancelled and purged by it.
        pub subject: String,
        /// The job's arguments, as the role wrote them (JSON or empty).
        pub payload: String,
        /// Due time; moved past the lease while a runner holds the job.
        pub next_run_at: DateTimeUtc,
        /// Failed runs so far.
        pub attempts: i32,
        pub done: bool,
        /// Why the last run failed (kept on a given-up job).
        pub last_error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity};

fn a(s: &str) -> Alias {
    Alias::new(s)
}

/// The `durable_jobs` table, for a role's migration.
pub fn create_table() -> TableCreateStatement {
    Table::create()
        .table(a(TABLE))
        .if_not_exists()
        .col(ColumnDef::new(a("id")).string().not_null().primary_key())
        .col(ColumnDef::new(a("kind")).string().not_null())
        .col(ColumnDef::new(a("subject")).string().not_null())
        .col(ColumnDef::new(a("payload")).text().not_null())
        .col(
            ColumnDef::new(a("next_run_at"))
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(ColumnDef::new(a("attempts")).integer().not_null())
        .col(ColumnDef::new(a("done")).boolean().not_null())
        .col(ColumnDef::new(a("last_error")).text().null())
        .to_owned()
}

/// Index to find due jobs.
pub fn create_index() -> IndexCreateStatement {
    Index::create()
        .name("durable_jobs_due")
        .table(a(TABLE))
        .col(a("done"))
        .col(a("next_run_at"))
        .if_not_exists()
        .to_owned()
}

/// Index to cancel and purge the jobs of one record.
pub fn create_subject_index() -> IndexCreateStatement {
    Index::create()
        .name("durable_jobs_subject")
        .table(a(TABLE))
        .col(a("subject"))
        .if_not_exists()
        .to_owned()
}

/// For a role's migration from its own `legacy` jobs table: copy its pending
/// jobs (their attempts and due times kept; `subject_column` names the
/// record column) into `durable_jobs`, then drop it.
pub async fn adopt_legacy(
    db: &impl ConnectionTrait,
    legacy: &str,
    subject_column: &str,
) -> Result<(), DbErr> {
    // Both names come from the role's own migration code, never from input.
    db.execute_unprepared(&format!(
        "INSERT INTO {TABLE} (id, kind, subject, payload, next_run_at, attempts, done, last_error) \
         SELECT id, kind, {subject_column}, payload, due_at, attempts, done, last_error \
         FROM {legacy} WHERE done = false"
    ))
    .await?;
    db.execute_unprepared(&format!("DROP TABLE {legacy}"))
        .await?;
    Ok(())
}

/// A job to write with the change that needs it.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub subject: &'a str,
    pub payload: String,
    pub run_at: DateTime<Utc>,
}

/// Write `job` inside the caller's transaction.
pub async fn add(conn: &impl ConnectionTrait, job: NewJob<'_>) -> Result<(), DbErr> {
    entity::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        kind: Set(job.kind.to_owned()),
        subject: Set(job.subject.to_owned()),
        payload: Set(job.payload),
        next_run_at: Set(job.run_at),
        attempts: Set(0),
        done: Set(false),
        last_error: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Mark the pending jobs of `kind` about `subject` done (a reminder of a
/// cancelled booking); returns how many.
pub async fn cancel(conn: &impl ConnectionTrait, kind: &str, subject: &str) -> Result<u64, DbErr> {
    let r = Entity::update_many()
        .col_expr(Column::Done, Expr::value(true))
        .filter(Column::Subject.eq(subject))
        .filter(Column::Kind.eq(kind))
        .filter(Column::Done.eq(false))
        .exec(conn)
        .await?;
    Ok(r.rows_affected)
}

/// Mark job `id` done inside the caller's transaction, so its effects and
/// its end commit together; false when it was done already.
pub async fn complete(conn: &impl ConnectionTrait, id: &str) -> Result<bool, DbErr> {
    let r = Entity::update_many()
        .col_expr(Column::Done, Expr::value(true))
        .filter(Column::Id.eq(id))
        .filter(Column::Done.eq(false))
        .exec(conn)
        .await?;
    Ok(r.rows_affected == 1)
}

/// How jobs are taken and retried.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Delay after the first failure; doubled after each next one.
    pub min_delay: std::time::Duration,
    /// The longest delay between two runs.
    pub max_delay: std::time::Duration,
    /// Failed runs after which a job is given up.
    pub max_attempts: usize,
    /// How long a runner holds a job it took; another replica may take it
    /// again only after that.
    pub lease: std::time::Duration,
    /// Jobs taken per pass.
    pub batch: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            min_delay: std::time::Duration::from_secs(2),
            max_delay: std::time::Duration::from_secs(256),
            max_attempts: 100,
            lease: std::time::Duration::from_secs(60),
            batch: 100,
        }
    }
}

impl Policy {
    /// The wait before the next run after `attempts` failures, or `None`
    /// when the job is to be given up.
    pub fn delay(&self, attempts: usize) -> Option<std::time::Duration> {
        if attempts == 0 {
            return Some(std::time::Duration::ZERO);
        }
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .build()
            .nth(attempts - 1)
    }
}

/// Runs the due jobs of one role database.
#[derive(Debug, Clone)]
pub struct Runner {
    db: DatabaseConnection,
    policy: Policy,
    /// The role, for logs.
    role: &'static str,
}

impl Runner {
    pub fn new(db: DatabaseConnection, role: &'static str, policy: Policy) -> Runner {
        Runner { db, policy, role }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Take each job due at `now` (leased: another replica skips it), run
    /// it with `run`, and record the outcome: done, retried later, or given
    /// up. Returns how many jobs succeeded.
    pub async fn run_due<F, Fut, E>(&self, now: DateTime<Utc>, mut run: F) -> Result<usize, DbErr>
    where
        F: FnMut(Job) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Classify + Display,
    {
        let lease = chrono::Duration::from_std(self.policy.lease).unwrap_or(chrono::Duration::MAX);
        let due = Entity::find()
            .filter(Column::Done.eq(false))
            .filter(Column::NextRunAt.lte(now))
            .order_by_asc(Column::NextRunAt)
            .order_by_asc(Column::Id)
            .limit(self.policy.batch)
            .all(&self.db)
            .await?;
        let mut handled = 0;
        for j in due {
            let taken = Entity::update_many()
                .col_expr(Column::NextRunAt, Expr::value(now + lease))
                .filter(Column::Id.eq(j.id.clone()))
                .filter(Column::Done.eq(false))
                .filter(Column::NextRunAt.eq(j.next_run_at))
                .exec(&self.db)
                .await?;
            if taken.rows_affected != 1 {
                continue;
            }
            let res = run(j.clone()).await;
            let mut am = j.clone().into_active_model();
            match res {
                Ok(()) => {
                    handled += 1;
                    am.done = Set(true);
                    am.last_error = Set(None);
                }
                Err(error) => {
                    let attempts = j.attempts.saturating_add(1);
                    let delay = match error.class() {
                        Class::Permanent => None,
                        Class::Transient => self.policy.delay(attempts.max(0) as usize),
                    };
                    am.last_error = Set(Some(error.to_string()));
                    am.attempts = Set(attempts);
                    match delay {
                        Some(delay) => {
                            tracing::warn!(role = self.role, job_id = %j.id, kind = %j.kind, attempts, %error, "job failed, will retry");
                            let delay =
                                chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                            am.next_run_at = Set(now + delay);
                        }
                        None => {
                            tracing::error!(role = self.role, job_id = %j.id, kind = %j.kind, attempts, %error, "job failed for good");
                            am.done = Set(true);
                        }
                    }
                }
            }
            match am.update(&self.db).await {
                // Deleted meanwhile (its record was purged): nothing to keep.
                Ok(_) | Err(DbErr::RecordNotUpdated) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(handled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Failure;
    use std::time::Duration;

    #[test]
    fn delays_double_up_to_the_cap_then_the_job_is_given_up() {
        let p = Policy {
            max_attempts: 12,
            ..Policy::default()
        };
        let secs: Vec<u64> = (1..=12)
            .map(|n| p.delay(n).map_or(0, |d| d.as_secs()))
            .collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 128, 256, 256, 256, 256, 0]);
        assert_eq!(p.delay(12), None, "the 12th failure gives the job up");
        assert_eq!(p.delay(0), Some(Duration::ZERO));
    }

    async fn memory_db() -> DatabaseConnection {
        // One connection: every query sees the same in-memory database.
        let mut opts = sea_orm::ConnectOptions::new("sqlite::memory:");
        opts.max_connections(1);
        let db = sea_orm::Database::connect(opts)
            .await
            .expect("sqlite in memory");
        db.execute(&create_table()).await.expect("durable_jobs");
        db
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    #[tokio::test]
    async fn a_leased_job_is_run_by_one_runner_only() {
        let db = memory_db().await;
        add(
            &db,
            NewJob {
                kind: "link",
                subject: "r1",
                payload: String::new(),
                run_at: at(0),
            },
        )
        .await
        .expect("add");
        let runner = Runner::new(db.clone(), "test", Policy::default());
        let other = runner.clone();
        let runs = std::sync::atomic::AtomicUsize::new(0);
        // While the first runner holds the job, a second one finds it taken.
        let first = runner
            .run_due(at(1), |_| async {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let nested = other
                    .run_due(at(1), |_| async {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok::<(), Failure>(())
                    })
                    .await
                    .expect("second runner");
                assert_eq!(nested, 0, "the leased job is not run twice");
                Ok::<(), Failure>(())
            })
            .await
            .expect("first runner");
        assert_eq!(first, 1);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        let again = runner
            .run_due(at(1000), |_| async { Ok::<(), Failure>(()) })
            .await
            .expect("again");
        assert_eq!(again, 0, "a done job is never run again");
    }

    #[tokio::test]
    async fn transient_failures_back_off_then_give_up_and_permanent_ones_stop_at_once() {
        let db = memory_db().await;
        for subject in ["flaky", "refused"] {
            add(
                &db,
                NewJob {
                    kind: subject,
                    subject,
                    payload: String::new(),
                    run_at: at(0),
                },
            )
            .await
            .expect("add");
        }
        let policy = Policy {
            max_attempts: 3,
            ..Policy::default()
        };
        let runner = Runner::new(db.clone(), "test", policy);
        let fail = |j: Job| async move {
            if j.kind == "refused" {
                Err(Failure::permanent("unknown dossier"))
            } else {
                Err(Failure::transient("dossier unavailable"))
            }
        };
        runner.run_due(at(0), fail).await.expect("run");
        let jobs = Entity::find().all(&db).await.expect("jobs");
        let flaky = jobs.iter().find(|j| j.kind == "flaky").expect("flaky");
        let refused = jobs.iter().find(|j| j.kind == "refused").expect("refused");
        assert!(refused.done, "a permanent failure is given up at once");
        assert_eq!(refused.last_error.as_deref(), Some("unknown dossier"));
        assert!(!flaky.done);
        assert_eq!(flaky.attempts, 1);
        assert_eq!(flaky.next_run_at, at(2), "first retry after 2 s");
        runner.run_due(at(1), fail).await.expect("not yet");
        runner.run_due(at(2), fail).await.expect("second");
        runner.run_due(at(6), fail).await.expect("third");
        let jobs = Entity::find().all(&db).await.expect("jobs");
        let flaky = jobs.iter().find(|j| j.kind == "flaky").expect("flaky");
        assert_eq!(flaky.attempts, 3);
        assert!(flaky.done, "given up after max_attempts failures");
        assert_eq!(flaky.last_error.as_deref(), Some("dossier unavailable"));
    }

    #[tokio::test]
    async fn a_legacy_jobs_table_hands_over_its_pending_jobs() {
        let db = memory_db().await;
        db.execute_unprepared(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, booking_id TEXT NOT NULL, \
             payload TEXT NOT NULL, due_at TEXT NOT NULL, attempts INTEGER NOT NULL, \
             done BOOLEAN NOT NULL, last_error TEXT NULL)",
        )
        .await
        .expect("legacy table");
        db.execute_unprepared(
            "INSERT INTO jobs VALUES \
             ('a', 'reminder', 'b1', '{}', '2027-01-06T09:00:00+00:00', 2, false, 'timeout'), \
             ('b', 'reminder', 'b2', '{}', '2027-01-06T09:00:00+00:00', 0, true, NULL)",
        )
        .await
        .expect("legacy rows");
        adopt_legacy(&db, "jobs", "booking_id")
            .await
            .expect("adopt");
        let jobs = Entity::find().all(&db).await.expect("jobs");
        assert_eq!(jobs.len(), 1, "only the pending job is carried over");
        assert_eq!(jobs[0].id, "a");
        assert_eq!(jobs[0].subject, "b1");
        assert_eq!(jobs[0].attempts, 2);
        assert_eq!(jobs[0].last_error.as_deref(), Some("timeout"));
        assert_eq!(
            jobs[0].next_run_at,
            DateTime::parse_from_rfc3339("2027-01-06T09:00:00Z")
                .expect("time")
                .with_timezone(&Utc)
        );
        assert!(
            db.execute_unprepared("SELECT 1 FROM jobs").await.is_err(),
            "the old table is gone"
        );
    }
}
