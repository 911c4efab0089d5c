//! Accounts, sessions, OIDC login flows and preferences.

use guichet_platform::migration::{id_pk, ident as a, index, string, timestamp};
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
                .table(a("accounts"))
                .col(id_pk())
                .col(string("login").unique_key())
                .col(string("display_name"))
                .col(string("password_hash"))
                // Comma-separated guichet roles and groups.
                .col(string("roles"))
                .col(string("groups"))
                .col(ColumnDef::new(a("disabled")).boolean().not_null())
                .col(ColumnDef::new(a("failed_logins")).integer().not_null())
                .col(timestamp("create_time"))
                .col(timestamp("update_time"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("sessions"))
                // SHA-256 of the cookie's secret: a leaked table opens nothing.
                .col(string("id").primary_key())
                .col(string("subject"))
                .col(string("display_name"))
                .col(string("roles"))
                .col(string("groups"))
                // "local" or "oidc".
                .col(string("kind"))
                // The provider's token passed to the roles (oidc only).
                .col(ColumnDef::new(a("bearer")).text().not_null())
                .col(
                    ColumnDef::new(a("bearer_expire_time"))
                        .timestamp_with_time_zone()
                        .null(),
                )
                .col(string("csrf"))
                .col(timestamp("create_time"))
                .col(timestamp("last_seen_time"))
                .col(timestamp("expire_time"))
                .to_owned(),
        )
        .await?;
        index(m, "sessions_subject", "sessions", &["subject"], false).await?;
        m.create_table(
            Table::create()
                .table(a("login_flows"))
                // The OIDC `state`.
                .col(string("id").primary_key())
                .col(string("pkce_verifier"))
                .col(string("nonce"))
                .col(string("return_to"))
                .col(timestamp("create_time"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("preferences"))
                .col(string("subject"))
                .col(string("key"))
                .col(ColumnDef::new(a("value")).text().not_null())
                .col(timestamp("update_time"))
                .primary_key(Index::create().col(a("subject")).col(a("key")))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["preferences", "login_flows", "sessions", "accounts"] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
