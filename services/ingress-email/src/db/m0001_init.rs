//! Email messages, blocked addresses, IMAP positions and the outbox.

use guichet_platform::migration::ident as a;
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_init"
    }
}

fn ts(name: &str) -> ColumnDef {
    ColumnDef::new(a(name))
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn s(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).string().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("email_messages"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(s("direction"))
                .col(s("message_key").unique_key().to_owned())
                .col(s("message_id"))
                .col(s("in_reply_to"))
                .col(ColumnDef::new(a("references")).text().not_null())
                .col(ColumnDef::new(a("subject")).text().not_null())
                .col(s("from_address"))
                .col(s("to_address"))
                .col(ColumnDef::new(a("text_clean")).text().not_null())
                .col(ColumnDef::new(a("text_full")).text().not_null())
                .col(s("raw_sha256"))
                .col(ColumnDef::new(a("size_bytes")).big_integer().not_null())
                .col(s("source"))
                .col(
                    ColumnDef::new(a("intake_event_id"))
                        .string()
                        .null()
                        .unique_key(),
                )
                .col(s("dossier_id"))
                .col(s("dossier_reference"))
                .col(ColumnDef::new(a("auto_submitted")).boolean().not_null())
                .col(s("auto_reason"))
                .col(ColumnDef::new(a("bounce")).boolean().not_null())
                .col(ColumnDef::new(a("parts")).text().not_null())
                .col(s("notification_id"))
                .col(ColumnDef::new(a("request_id")).string().null().unique_key())
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("email_messages_dossier")
                .table(a("email_messages"))
                .col(a("dossier_id"))
                .col(a("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("email_blocked_addresses"))
                .col(
                    ColumnDef::new(a("address"))
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(s("reason"))
                .col(s("bounce_message_id"))
                .col(ts("blocked_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("email_imap_state"))
                .col(
                    ColumnDef::new(a("mailbox"))
                        .string()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(a("uid_validity")).big_integer().not_null())
                .col(ColumnDef::new(a("last_uid")).big_integer().not_null())
                .col(ts("updated_at"))
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
            "email_imap_state",
            "email_blocked_addresses",
            "email_messages",
        ] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
