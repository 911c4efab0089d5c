//! The unified queue (`work_items`) and agents' presence.

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
                .table(a("work_items"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(
                    ColumnDef::new(a("intake_event_id"))
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new(a("channel")).string().not_null())
                .col(ColumnDef::new(a("status")).string().not_null())
                .col(ColumnDef::new(a("priority")).integer().not_null())
                .col(ColumnDef::new(a("dossier_id")).string().not_null())
                .col(ColumnDef::new(a("dossier_reference")).string().not_null())
                .col(ColumnDef::new(a("citizen_id")).string().not_null())
                .col(ColumnDef::new(a("process_id")).string().not_null())
                .col(ColumnDef::new(a("summary")).text().not_null())
                .col(ColumnDef::new(a("agent_id")).string().null())
                .col(ColumnDef::new(a("outcome")).text().null())
                .col(
                    ColumnDef::new(a("enter_time"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(a("assign_time"))
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new(a("complete_time"))
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(
                    ColumnDef::new(a("updated_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        // The queue order: status, then priority, then age.
        m.create_index(
            Index::create()
                .name("work_items_queue_order")
                .table(a("work_items"))
                .col(a("status"))
                .col(a("priority"))
                .col(a("enter_time"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("agents"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(ColumnDef::new(a("presence")).string().not_null())
                .col(
                    ColumnDef::new(a("updated_at"))
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
        for t in ["outbox", "agents", "work_items"] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
