//! What the agent must know before trusting a request (an unverified
//! sender matched by address, mail claiming to be the town's from outside,
//! a burst): JSON list of French sentences.

use guichet_platform::migration::{add_column, ident};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0008_item_warnings"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            m,
            "work_items",
            ColumnDef::new(ident("warnings"))
                .text()
                .not_null()
                .default("[]"),
        )
        .await
    }
}
