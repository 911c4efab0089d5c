//! Issue 14: the citizens a request may belong to (weak identity evidence),
//! kept on its work item for the agent to confirm or reject.

use guichet_platform::migration::{add_column, string};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_citizen_candidates"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // JSON array of {citizen_id, confidence, why}.
        add_column(
            m,
            "work_items",
            &mut string("candidates").default("[]").to_owned(),
        )
        .await
    }
}
