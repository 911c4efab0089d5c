//! Requests, signers, codes, events, jobs and the outbox.
//!
//! Codes hold only an HMAC of the code; a confirmation wins by a
//! conditional UPDATE (status still `active`, attempts left, not expired),
//! so two concurrent confirmations of one code give exactly one success on
//! both PostgreSQL and SQLite. Events are never updated or deleted.

use guichet_platform::migration::{
    ident as a, index, string as text, timestamp as ts, timestamp_null,
};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_init"
    }
}

fn int(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).integer().not_null().to_owned()
}

fn opt(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).string().null().to_owned()
}

fn long(name: &str) -> ColumnDef {
    ColumnDef::new(a(name)).text().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("signature_requests"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(opt("request_id").unique_key().to_owned())
                .col(text("dossier_id"))
                .col(text("title"))
                .col(text("process_template"))
                .col(text("document_sha256"))
                .col(ColumnDef::new(a("document_size")).big_integer().not_null())
                .col(long("consent_text"))
                .col(text("status"))
                .col(ts("expire_at"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .col(timestamp_null("completed_at"))
                .col(text("creator"))
                .col(opt("signed_sha256"))
                .col(opt("evidence_sha256"))
                .col(opt("key_id"))
                .col(opt("decline_reason"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "signature_requests_dossier",
            "signature_requests",
            &["dossier_id"],
            false,
        )
        .await?;
        index(
            m,
            "signature_requests_status_expire",
            "signature_requests",
            &["status", "expire_at"],
            false,
        )
        .await?;
        index(
            m,
            "signature_requests_signed",
            "signature_requests",
            &["signed_sha256"],
            false,
        )
        .await?;
        index(
            m,
            "signature_requests_document",
            "signature_requests",
            &["document_sha256"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("signers"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(text("request_id"))
                .col(int("position"))
                .col(text("name"))
                .col(text("phone"))
                .col(text("token").unique_key().to_owned())
                .col(text("status"))
                .col(timestamp_null("signed_at"))
                .col(int("codes_sent"))
                .col(timestamp_null("last_code_at"))
                .col(opt("sign_ip"))
                .col(opt("sign_user_agent"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "signers_request",
            "signers",
            &["request_id", "position"],
            true,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("codes"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(text("signer_id"))
                .col(text("request_id"))
                .col(text("hash"))
                .col(ts("created_at"))
                .col(ts("expire_at"))
                .col(int("attempts"))
                .col(text("status"))
                .to_owned(),
        )
        .await?;
        index(m, "codes_signer", "codes", &["signer_id", "status"], false).await?;
        m.create_table(
            Table::create()
                .table(a("signature_events"))
                .col(
                    ColumnDef::new(a("id"))
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(text("request_id"))
                .col(text("signer_id"))
                .col(text("kind"))
                .col(text("outcome"))
                .col(ts("at"))
                .col(text("ip"))
                .col(long("user_agent"))
                .col(text("actor"))
                .col(long("detail"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "signature_events_request",
            "signature_events",
            &["request_id", "id"],
            false,
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("jobs"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(text("kind"))
                .col(text("request_id"))
                .col(long("payload"))
                .col(ts("due_at"))
                .col(int("attempts"))
                .col(ColumnDef::new(a("done")).boolean().not_null())
                .col(opt("last_error"))
                .to_owned(),
        )
        .await?;
        index(m, "jobs_due", "jobs", &["done", "due_at"], false).await?;
        m.create_table(guichet_platform::outbox::create_table())
            .await?;
        m.create_index(guichet_platform::outbox::create_index())
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "outbox",
            "jobs",
            "signature_events",
            "codes",
            "signers",
            "signature_requests",
        ] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
