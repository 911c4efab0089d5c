//! The process studio: drafts being worked on (one per process) and the
//! versions published from it, with who published them and why.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_process_studio"
    }
}

fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("process_drafts"))
                .if_not_exists()
                .col(col("process_id").string().not_null().primary_key())
                .col(col("base_version").integer().not_null())
                .col(col("version").integer().not_null())
                .col(col("text").text().not_null())
                .col(col("author").string().not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("updated_at").timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("process_publications"))
                .if_not_exists()
                .col(col("process_id").string().not_null())
                .col(col("version").integer().not_null())
                // The published text; the catalog reads it when `written_to`
                // is `database`.
                .col(col("text").text().not_null())
                .col(col("published_by").string().not_null())
                .col(col("reason").text().not_null())
                .col(col("written_to").string().not_null())
                .col(col("published_at").timestamp_with_time_zone().not_null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("process_id"))
                        .col(Alias::new("version")),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["process_publications", "process_drafts"] {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned())
                .await?;
        }
        Ok(())
    }
}
