//! The hall's devices: kiosks and waiting-room boards enrolled by a
//! supervisor. A device holds a long-lived cookie whose SHA-256 is kept
//! here; it opens only its own pages, for its site, until revoked.

use guichet_platform::migration::{id_pk, ident as a, index, string, timestamp, timestamp_null};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_devices"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("devices"))
                .col(id_pk())
                .col(string("secret_hash").unique_key())
                // "borne" (kiosk) or "ecran" (waiting-room board).
                .col(string("kind"))
                .col(string("site"))
                .col(string("label"))
                // The token of the kiosk's forms.
                .col(string("csrf"))
                .col(string("created_by"))
                .col(timestamp("create_time"))
                .col(timestamp("last_seen_time"))
                .col(timestamp_null("revoke_time"))
                .to_owned(),
        )
        .await?;
        index(m, "devices_site", "devices", &["site"], false).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("devices")).to_owned())
            .await
    }
}
