//! Version counters per desk, raised in every transaction that takes or
//! frees a unit of that desk (book, move, cancel) or changes its run-time
//! exceptions. A desk's version is the sum of its rows (`shard`: a
//! transaction raises one row picked at random, so concurrent bookings of
//! one desk seldom wait on the same row lock). The availability index
//! (`core::index`) reads these sums on every query and answers from memory
//! only while they are unchanged, so a replica never serves what another
//! replica's commit made stale.

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
                .col(text("desk_id"))
                .col(ColumnDef::new(a("shard")).integer().not_null())
                .col(ColumnDef::new(a("version")).big_integer().not_null())
                .primary_key(Index::create().col(a("desk_id")).col(a("shard")))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("slot_versions")).to_owned())
            .await
    }
}
