//! One version counter per desk, raised in every transaction that takes or
//! frees a unit of that desk (book, move, cancel) or changes its run-time
//! exceptions. The availability index (`core::index`) reads these counters
//! on every query and answers from memory only while they are unchanged,
//! so a replica never serves what another replica's commit made stale.

use guichet_platform::migration::{ident as a, string as text};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_slot_versions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("slot_versions"))
                .col(text("desk_id").primary_key().to_owned())
                .col(ColumnDef::new(a("version")).big_integer().not_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("slot_versions")).to_owned())
            .await
    }
}
