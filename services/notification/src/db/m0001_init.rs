//! Notifications, suppressions and the event outbox.
//!
//! `notifications.id` is the request id: a redelivered request finds its
//! row and is not queued twice. The worker claims due rows by setting a
//! lease (`lease_owner`, `lease_until`) with a conditional UPDATE, which
//! only one replica can win on PostgreSQL and SQLite alike.

use guichet_platform::migration::{id_pk, timestamp_null};
use guichet_platform::migration::{ident as a, index, string as text, timestamp as ts};
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
                .table(a("notifications"))
                .col(id_pk())
                .col(text("channel"))
                .col(text("recipient"))
                .col(text("template"))
                .col(text("dossier_id"))
                .col(text("requested_by"))
                .col(ColumnDef::new(a("request")).binary().not_null())
                .col(text("status"))
                .col(ColumnDef::new(a("attempts")).integer().not_null())
                .col(timestamp_null("next_attempt_at"))
                .col(timestamp_null("not_after"))
                .col(ColumnDef::new(a("last_error")).string().null())
                .col(ColumnDef::new(a("provider_message_id")).string().null())
                .col(ColumnDef::new(a("message_id")).string().null())
                .col(ColumnDef::new(a("segments")).integer().not_null())
                .col(text("encoding"))
                .col(ColumnDef::new(a("lease_owner")).string().null())
                .col(timestamp_null("lease_until"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .col(timestamp_null("sent_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "notifications_due",
            "notifications",
            &["status", "next_attempt_at"],
            false,
        )
        .await?;
        index(
            m,
            "notifications_recipient_sent",
            "notifications",
            &["recipient", "sent_at"],
            false,
        )
        .await?;
        index(
            m,
            "notifications_provider_id",
            "notifications",
            &["provider_message_id"],
            false,
        )
        .await?;
        index(
            m,
            "notifications_dossier",
            "notifications",
            &["dossier_id"],
            false,
        )
        .await?;
        index(
            m,
            "notifications_created",
            "notifications",
            &["created_at", "id"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("suppressions"))
                .col(text("address").primary_key().to_owned())
                .col(text("reason"))
                .col(text("bounce_message_id"))
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
        for t in ["outbox", "suppressions", "notifications"] {
            m.drop_table(Table::drop().table(a(t)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
