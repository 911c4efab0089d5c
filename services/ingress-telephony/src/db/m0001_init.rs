//! Calls, callback requests, and the outbox of their intake events.

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
                .table(a("calls"))
                .col(
                    ColumnDef::new(a("call_id"))
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(a("direction")).string().not_null())
                .col(ColumnDef::new(a("citizen_phone")).string().null())
                .col(ColumnDef::new(a("anonymous")).boolean().not_null())
                .col(ColumnDef::new(a("blocked")).boolean().not_null())
                .col(ColumnDef::new(a("queue")).string().not_null())
                .col(ColumnDef::new(a("state")).string().not_null())
                .col(ColumnDef::new(a("answered_by")).string().not_null())
                .col(ColumnDef::new(a("cause")).string().not_null())
                .col(ColumnDef::new(a("voicemail")).boolean().not_null())
                .col(ColumnDef::new(a("missed")).boolean().not_null())
                .col(ColumnDef::new(a("callback_requested")).boolean().not_null())
                .col(ColumnDef::new(a("waiting_seconds")).integer().null())
                .col(ColumnDef::new(a("talk_seconds")).integer().null())
                .col(ColumnDef::new(a("source")).string().not_null())
                .col(ColumnDef::new(a("intake_event_id")).string().null())
                .col(
                    ColumnDef::new(a("started_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(a("answered_at"))
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new(a("ended_at"))
                        .timestamp_with_time_zone()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("callbacks"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(ColumnDef::new(a("request_id")).string().null().unique_key())
                .col(ColumnDef::new(a("phone")).string().not_null())
                .col(ColumnDef::new(a("call_id")).string().not_null())
                .col(ColumnDef::new(a("requested_by")).string().not_null())
                .col(
                    ColumnDef::new(a("intake_event_id"))
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(
                    ColumnDef::new(a("requested_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
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
        for t in ["outbox", "callbacks", "calls"] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
