//! Issue 18: the PBX users and extensions mapped to guichet agents (screen
//! pop on the right agent's page, the answered call assigned to her), and
//! on each call the guichet agent who answered.

use guichet_platform::migration::{add_column, ident as a, string, timestamp};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_extensions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("extensions"))
                // The PBX user name or extension number, as the CTI names it.
                .col(string("extension").primary_key())
                .col(string("agent_id"))
                .col(string("updated_by"))
                .col(timestamp("update_time"))
                .to_owned(),
        )
        .await?;
        add_column(m, "calls", string("answered_agent_id").null()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(a("calls"))
                .drop_column(a("answered_agent_id"))
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(a("extensions")).to_owned())
            .await
    }
}
