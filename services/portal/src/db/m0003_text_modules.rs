//! The town's French text modules for email answers, per procedure,
//! edited by an admin on the portal (`/modeles`).

use guichet_platform::migration::{id_pk, ident as a, index, string, timestamp};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_text_modules"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("text_modules"))
                .col(id_pk())
                // The procedure it serves; empty: every procedure.
                .col(string("process_id"))
                .col(string("title"))
                .col(ColumnDef::new(a("body")).text().not_null())
                .col(string("updated_by"))
                .col(timestamp("update_time"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "text_modules_process",
            "text_modules",
            &["process_id"],
            false,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("text_modules")).to_owned())
            .await
    }
}
