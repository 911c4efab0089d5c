//! Check-in lookups: the counter kiosk finds a booking by the phone given at
//! booking (the reference already has a unique index).

use guichet_platform::migration::index;
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_lookup"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        index(
            m,
            "bookings_phone",
            "bookings",
            &["phone", "start_at"],
            false,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("bookings_phone")
                .table(guichet_platform::migration::ident("bookings"))
                .to_owned(),
        )
        .await
    }
}
