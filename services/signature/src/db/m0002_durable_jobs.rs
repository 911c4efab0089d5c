//! Jobs move to the platform's `durable_jobs` table (leased, bounded
//! retries); the pending ones of the old `jobs` table are carried over with
//! their attempts and due times.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_durable_jobs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(guichet_platform::jobs::create_table())
            .await?;
        m.create_index(guichet_platform::jobs::create_index())
            .await?;
        m.create_index(guichet_platform::jobs::create_subject_index())
            .await?;
        guichet_platform::jobs::adopt_legacy(m.get_connection(), "jobs", "request_id").await
    }

    async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "m0002_durable_jobs cannot be undone: the old jobs table is gone".into(),
        ))
    }
}
