//! Scanned files and the outbox of their intake events.

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
                .table(a("scan_files"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(ColumnDef::new(a("sha256")).string().not_null().unique_key())
                .col(ColumnDef::new(a("filename")).string().not_null())
                .col(ColumnDef::new(a("media_type")).string().not_null())
                .col(ColumnDef::new(a("size_bytes")).big_integer().not_null())
                .col(ColumnDef::new(a("source")).string().not_null())
                .col(ColumnDef::new(a("batch_id")).string().not_null())
                .col(ColumnDef::new(a("state")).string().not_null())
                .col(ColumnDef::new(a("reason")).string().null())
                .col(ColumnDef::new(a("detail")).string().not_null())
                .col(
                    ColumnDef::new(a("intake_event_id"))
                        .string()
                        .null()
                        .unique_key(),
                )
                .col(ColumnDef::new(a("page_count")).integer().not_null())
                .col(ColumnDef::new(a("ocr_confidence")).double().not_null())
                .col(ColumnDef::new(a("release_count")).integer().not_null())
                .col(
                    ColumnDef::new(a("received_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(a("updated_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("scan_files_state_received")
                .table(a("scan_files"))
                .col(a("state"))
                .col(a("received_at"))
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
        for t in ["outbox", "scan_files"] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
