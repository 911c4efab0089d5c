//! The town's own wording of message templates, written from the process
//! studio: each row replaces the shipped (or `templates_dir`) template of
//! its id on every replica.

use guichet_platform::migration::id_pk;
use guichet_platform::migration::{ident as a, string as text, timestamp as ts};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_template_overrides"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("template_overrides"))
                .if_not_exists()
                .col(id_pk())
                // The template as TOML, checked like a file of templates_dir.
                .col(ColumnDef::new(a("text")).text().not_null())
                .col(text("updated_by"))
                .col(ColumnDef::new(a("reason")).text().not_null())
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        // Every change of a wording, kept: who, when, why, and the text.
        m.create_table(
            Table::create()
                .table(a("template_changes"))
                .if_not_exists()
                .col(id_pk())
                .col(text("template_id"))
                // update or reset
                .col(text("action"))
                .col(ColumnDef::new(a("text")).text().not_null())
                .col(text("actor"))
                .col(ColumnDef::new(a("reason")).text().not_null())
                .col(ts("changed_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("template_changes")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(a("template_overrides")).to_owned())
            .await
    }
}
