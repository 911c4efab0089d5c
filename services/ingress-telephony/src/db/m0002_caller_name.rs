//! Issue 14: the name the caller ID gives (`"Jean Dupont" <0612345678>` in a
//! CDR's `clid` or a CTI `from`), kept so the citizen is named.

use guichet_platform::migration::{add_column, string};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_caller_name"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            m,
            "calls",
            &mut string("caller_name").default("").to_owned(),
        )
        .await
    }
}
