//! The rules studio: the rule sets process owners publish (who, when, why,
//! and where a deployment that keeps files as the source of truth wrote
//! them), newest in force on every replica; and each request's
//! classification input, so a candidate rule set can be tried on real past
//! requests.

use guichet_platform::migration::{ident as a, index, string, timestamp};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_rules_studio"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("rules_publications"))
                .col(string("id").primary_key())
                .col(string("version"))
                .col(ColumnDef::new(a("text")).text().not_null())
                .col(string("author"))
                .col(string("author_name"))
                .col(ColumnDef::new(a("reason")).text().not_null())
                .col(timestamp("published_at"))
                // The file written (studio_writes = "file"); empty: the database.
                .col(string("written_to"))
                .col(string("previous_version"))
                .col(ColumnDef::new(a("rule_count")).integer().not_null())
                .to_owned(),
        )
        .await?;
        index(
            m,
            "rules_publications_at",
            "rules_publications",
            &["published_at"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("intake_inputs"))
                .col(string("intake_event_id").primary_key())
                // The intake event as classified (protobuf), without the
                // citizen's name and address, which no rule reads.
                .col(ColumnDef::new(a("event")).blob().not_null())
                .col(timestamp("received_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("intake_inputs")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(a("rules_publications")).to_owned())
            .await
    }
}
