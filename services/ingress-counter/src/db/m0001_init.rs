//! Tickets, their daily counters, and the outbox of their intake events.

use guichet_platform::migration::ident as a;
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_init"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("tickets"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(ColumnDef::new(a("request_id")).string().null().unique_key())
                .col(ColumnDef::new(a("number")).string().not_null())
                .col(ColumnDef::new(a("service")).string().not_null())
                .col(ColumnDef::new(a("site")).string().not_null())
                .col(ColumnDef::new(a("day")).string().not_null())
                .col(
                    ColumnDef::new(a("intake_event_id"))
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(
                    ColumnDef::new(a("issued_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("ticket_counters"))
                .col(ColumnDef::new(a("key")).string().not_null().primary_key())
                .col(ColumnDef::new(a("last_value")).big_integer().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(guichet_platform::outbox::create_table())
            .await?;
        m.create_index(guichet_platform::outbox::create_index())
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["outbox", "ticket_counters", "tickets"] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
