//! Issue 18: the callbacks made on a telephony request, and how many went
//! unanswered (the request closes after `routing.callback_attempts`).

use guichet_platform::migration::{add_column, ident};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_callback_attempts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in ["callback_attempts", "callback_unanswered"] {
            add_column(
                m,
                "work_items",
                ColumnDef::new(ident(c)).integer().not_null().default(0),
            )
            .await?;
        }
        Ok(())
    }
}
