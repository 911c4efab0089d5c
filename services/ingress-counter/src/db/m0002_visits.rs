//! Visits: a ticket's priority, status, desk and the times of each step.

use guichet_platform::migration::{add_column, ident as a};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_visits"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        let cols = [
            ColumnDef::new(a("priority"))
                .string()
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(a("status"))
                .string()
                .not_null()
                .default("waiting")
                .to_owned(),
            ColumnDef::new(a("waiting_since"))
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(a("rank_at"))
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(a("desk")).string().null().to_owned(),
            ColumnDef::new(a("call_time"))
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(a("start_time"))
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(a("finish_time"))
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(a("no_show_time"))
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(a("recalls"))
                .integer()
                .not_null()
                .default(0)
                .to_owned(),
            ColumnDef::new(a("transferred_from"))
                .string()
                .null()
                .to_owned(),
        ];
        for mut c in cols {
            add_column(m, "tickets", &mut c).await?;
        }
        // Tickets issued before this version wait since they were issued.
        m.get_connection()
            .execute_unprepared(
                "UPDATE tickets SET waiting_since = issued_at, rank_at = issued_at WHERE rank_at IS NULL",
            )
            .await?;
        m.create_index(
            Index::create()
                .name("tickets_queue")
                .table(a("tickets"))
                .col(a("site"))
                .col(a("status"))
                .col(a("rank_at"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("tickets_queue")
                .table(a("tickets"))
                .to_owned(),
        )
        .await?;
        for c in [
            "priority",
            "status",
            "waiting_since",
            "rank_at",
            "desk",
            "call_time",
            "start_time",
            "finish_time",
            "no_show_time",
            "recalls",
            "transferred_from",
        ] {
            m.alter_table(
                Table::alter()
                    .table(a("tickets"))
                    .drop_column(a(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
