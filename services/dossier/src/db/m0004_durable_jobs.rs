//! The platform's `durable_jobs` table: the actions a state entry asks for
//! (a message, a signature request, an appointment to propose) are written
//! with the transition and carried out after it commits, retried until they
//! succeed or are given up.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_durable_jobs"
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
            .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new(guichet_platform::jobs::TABLE))
                .to_owned(),
        )
        .await
    }
}
