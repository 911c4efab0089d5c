//! The agent who called a ticket: routing hands the ticket's request to
//! them, and their desk page finds its current ticket.

use guichet_platform::migration::{add_column, ident, string};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_agent"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(m, "tickets", string("agent_id").null()).await?;
        // The board and the desks list a site's tickets of the day.
        m.create_index(
            Index::create()
                .name("tickets_site_day_status")
                .table(ident("tickets"))
                .col(ident("site"))
                .col(ident("day"))
                .col(ident("status"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("tickets_site_day_status")
                .table(ident("tickets"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(ident("tickets"))
                .drop_column(ident("agent_id"))
                .to_owned(),
        )
        .await
    }
}
