//! Dated schedule exceptions made at run time (closures, absences, extra
//! openings), on top of the configured ones.

use guichet_platform::migration::ident as a;
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_exceptions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("schedule_exceptions"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(ColumnDef::new(a("desk_id")).string().not_null())
                .col(ColumnDef::new(a("kind")).string().not_null())
                .col(
                    ColumnDef::new(a("start_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(a("end_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new(a("reason")).string().not_null())
                .col(ColumnDef::new(a("created_by")).string().not_null())
                .col(
                    ColumnDef::new(a("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("schedule_exceptions_desk")
                .table(a("schedule_exceptions"))
                .col(a("desk_id"))
                .col(a("start_at"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("schedule_exceptions")).to_owned())
            .await?;
        Ok(())
    }
}
