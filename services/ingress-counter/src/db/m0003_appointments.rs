//! Appointment check-in: a ticket may stand for a booking of the
//! appointment role (its id and start time).

use guichet_platform::migration::{add_column, string, timestamp_null};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_appointments"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(m, "tickets", string("booking_id").null()).await?;
        add_column(m, "tickets", &mut timestamp_null("appointment_at")).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in ["appointment_at", "booking_id"] {
            m.alter_table(
                Table::alter()
                    .table(guichet_platform::migration::ident("tickets"))
                    .drop_column(guichet_platform::migration::ident(c))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
