//! A ticket's public token: the secret of its citizen's status page (the
//! kiosk prints it as a QR code), looked up by an index.

use guichet_platform::migration::{add_column, ident, string};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_public_token"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(m, "tickets", string("public_token").null()).await?;
        m.create_index(
            Index::create()
                .name("tickets_public_token")
                .table(ident("tickets"))
                .col(ident("public_token"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("tickets_public_token").to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table(ident("tickets"))
                .drop_column(ident("public_token"))
                .to_owned(),
        )
        .await
    }
}
