//! Bookings, slot claims, idempotency keys, pre-application numbers, jobs,
//! the waiting list and the outbox.
//!
//! `slot_claims` is the no-double-booking guarantee: a booking inserts one
//! row per schedule unit it occupies, in the transaction that creates or
//! moves it, and the primary key (desk_id, unit_start) refuses a second
//! claim of the same unit on both PostgreSQL and SQLite, whatever the
//! concurrency.

use guichet_platform::migration::{ident as a, string as text, timestamp as ts};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_init"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("bookings"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(text("reference").unique_key().to_owned())
                .col(ColumnDef::new(a("request_id")).string().null().unique_key())
                .col(text("type_id"))
                .col(text("site_id"))
                .col(text("desk_id"))
                .col(ts("start_at"))
                .col(ts("end_at"))
                .col(ColumnDef::new(a("people")).integer().not_null())
                .col(text("citizen_id"))
                .col(text("dossier_id"))
                .col(ColumnDef::new(a("phone")).string().null())
                .col(ColumnDef::new(a("email")).string().null())
                .col(text("status"))
                .col(text("cancel_token"))
                .col(ColumnDef::new(a("version")).integer().not_null())
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("bookings_desk_start", vec!["desk_id", "start_at"]),
            ("bookings_citizen", vec!["citizen_id", "start_at"]),
            ("bookings_dossier", vec!["dossier_id"]),
            ("bookings_start", vec!["start_at", "id"]),
        ] {
            let mut idx = Index::create();
            idx.name(name).table(a("bookings"));
            for c in cols {
                idx.col(a(c));
            }
            m.create_index(idx.to_owned()).await?;
        }
        m.create_table(
            Table::create()
                .table(a("slot_claims"))
                .col(text("desk_id"))
                .col(ColumnDef::new(a("unit_start")).big_integer().not_null())
                .col(text("booking_id"))
                .primary_key(Index::create().col(a("desk_id")).col(a("unit_start")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("slot_claims_booking")
                .table(a("slot_claims"))
                .col(a("booking_id"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("booking_actions"))
                .col(
                    ColumnDef::new(a("request_id"))
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(text("booking_id"))
                .col(text("action"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("booking_applications"))
                .col(text("application_id"))
                .col(text("booking_id"))
                .primary_key(
                    Index::create()
                        .col(a("application_id"))
                        .col(a("booking_id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("jobs"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(text("kind"))
                .col(text("booking_id"))
                .col(text("payload"))
                .col(ts("due_at"))
                .col(ColumnDef::new(a("attempts")).integer().not_null())
                .col(ColumnDef::new(a("done")).boolean().not_null())
                .col(ColumnDef::new(a("last_error")).string().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("jobs_due")
                .table(a("jobs"))
                .col(a("done"))
                .col(a("due_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("waiting_list"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(ColumnDef::new(a("request_id")).string().null().unique_key())
                .col(text("type_id"))
                .col(text("site_ids"))
                .col(ColumnDef::new(a("people")).integer().not_null())
                .col(text("citizen_id"))
                .col(ColumnDef::new(a("phone")).string().null())
                .col(ColumnDef::new(a("email")).string().null())
                .col(ts("before_at"))
                .col(ColumnDef::new(a("messages_sent")).integer().not_null())
                .col(text("last_message_day"))
                .col(ColumnDef::new(a("active")).boolean().not_null())
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(guichet_platform::outbox::create_table())
            .await?;
        m.create_index(guichet_platform::outbox::create_index())
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "outbox",
            "waiting_list",
            "jobs",
            "booking_applications",
            "booking_actions",
            "slot_claims",
            "bookings",
        ] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
