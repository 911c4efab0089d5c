//! Citizens with their contact points, dossiers with human references, the
//! timeline, and the per-prefix-and-year reference counters.

use guichet_platform::migration::ident as a;
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
                .table(a("citizens"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(ColumnDef::new(a("given_name")).string().not_null())
                .col(ColumnDef::new(a("family_name")).string().not_null())
                .col(ColumnDef::new(a("name_key")).string().not_null())
                .col(
                    ColumnDef::new(a("source_request_id"))
                        .string()
                        .null()
                        .unique_key(),
                )
                .col(
                    ColumnDef::new(a("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(a("updated_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("citizens_name_key")
                .table(a("citizens"))
                .col(a("name_key"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("citizen_contacts"))
                .col(
                    ColumnDef::new(a("id"))
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(a("citizen_id")).string().not_null())
                .col(ColumnDef::new(a("kind")).string().not_null())
                .col(ColumnDef::new(a("value")).string().not_null())
                .col(
                    ColumnDef::new(a("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(a("citizen_contacts"), a("citizen_id"))
                        .to(a("citizens"), a("id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("citizen_contacts_unique")
                .table(a("citizen_contacts"))
                .col(a("citizen_id"))
                .col(a("kind"))
                .col(a("value"))
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("citizen_contacts_lookup")
                .table(a("citizen_contacts"))
                .col(a("kind"))
                .col(a("value"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("dossiers"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(
                    ColumnDef::new(a("reference"))
                        .string()
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new(a("citizen_id")).string().not_null())
                .col(ColumnDef::new(a("process_id")).string().not_null())
                .col(ColumnDef::new(a("process_version")).integer().not_null())
                .col(ColumnDef::new(a("state")).string().not_null())
                .col(
                    ColumnDef::new(a("opened_request_id"))
                        .string()
                        .null()
                        .unique_key(),
                )
                .col(
                    ColumnDef::new(a("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(a("updated_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(a("dossiers"), a("citizen_id"))
                        .to(a("citizens"), a("id")),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("dossiers_citizen")
                .table(a("dossiers"))
                .col(a("citizen_id"))
                .col(a("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(a("timeline_entries"))
                .col(ColumnDef::new(a("id")).string().not_null().primary_key())
                .col(ColumnDef::new(a("citizen_id")).string().not_null())
                .col(ColumnDef::new(a("dossier_id")).string().null())
                .col(ColumnDef::new(a("kind")).string().not_null())
                .col(ColumnDef::new(a("channel")).string().not_null())
                .col(
                    ColumnDef::new(a("occurred_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(ColumnDef::new(a("summary")).text().not_null())
                .col(ColumnDef::new(a("actor")).string().not_null())
                .col(
                    ColumnDef::new(a("source_event_id"))
                        .string()
                        .null()
                        .unique_key(),
                )
                .col(
                    ColumnDef::new(a("created_at"))
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("timeline_by_citizen", "citizen_id"),
            ("timeline_by_dossier", "dossier_id"),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(a("timeline_entries"))
                    .col(a(col))
                    .col(a("occurred_at"))
                    .col(a("id"))
                    .to_owned(),
            )
            .await?;
        }
        m.create_table(
            Table::create()
                .table(a("reference_counters"))
                .col(ColumnDef::new(a("key")).string().not_null().primary_key())
                .col(ColumnDef::new(a("last_value")).big_integer().not_null())
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
            "reference_counters",
            "timeline_entries",
            "dossiers",
            "citizen_contacts",
            "citizens",
        ] {
            m.drop_table(Table::drop().table(a(t)).to_owned()).await?;
        }
        Ok(())
    }
}
