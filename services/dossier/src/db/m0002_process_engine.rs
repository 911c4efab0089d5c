//! Issue 3: richer citizens (address, preferences, merges, erasure), dossier
//! holders, revisions, closing and legal holds, notes visibility, documents,
//! links to appointments and signatures, timers, transitions, merges, audit.

use guichet_platform::migration::{
    add_column, id_pk, ident as a, index, string, timestamp as ts, timestamp_null as ts_null,
};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_process_engine"
    }
}

fn text(name: &str) -> ColumnDef {
    string(name).default("").to_owned()
}

async fn add_columns(
    m: &SchemaManager<'_>,
    table: &str,
    cols: Vec<ColumnDef>,
) -> Result<(), DbErr> {
    for mut c in cols {
        add_column(m, table, &mut c).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_columns(
            m,
            "citizens",
            vec![
                // JSON array of address lines.
                text("address_lines"),
                text("postal_code"),
                text("city"),
                text("country"),
                // Accent/case-insensitive address key for matching.
                text("address_key"),
                text("preferred_channel"),
                ColumnDef::new(a("language"))
                    .string()
                    .not_null()
                    .default("fr")
                    .to_owned(),
                ColumnDef::new(a("merged_into")).string().null().to_owned(),
                ts_null("erased_at"),
            ],
        )
        .await?;
        add_columns(
            m,
            "dossiers",
            vec![
                text("holder_agent"),
                text("holder_department"),
                ColumnDef::new(a("revision"))
                    .big_integer()
                    .not_null()
                    .default(1)
                    .to_owned(),
                ts_null("state_entered_at"),
                ts_null("closed_at"),
                ColumnDef::new(a("legal_hold"))
                    .boolean()
                    .not_null()
                    .default(false)
                    .to_owned(),
                text("legal_hold_reason"),
                // Copied from the process at opening, for restricted reads.
                text("restricted_group"),
            ],
        )
        .await?;
        index(
            m,
            "dossiers_process",
            "dossiers",
            &["process_id", "process_version", "state"],
            false,
        )
        .await?;
        index(m, "dossiers_closed", "dossiers", &["closed_at"], false).await?;
        add_columns(m, "timeline_entries", vec![text("visibility")]).await?;

        m.create_table(
            Table::create()
                .table(a("documents"))
                .col(id_pk())
                .col(ColumnDef::new(a("dossier_id")).string().not_null())
                .col(ColumnDef::new(a("citizen_id")).string().not_null())
                .col(ColumnDef::new(a("sha256")).string().not_null())
                .col(ColumnDef::new(a("media_type")).string().not_null())
                .col(ColumnDef::new(a("size_bytes")).big_integer().not_null())
                .col(text("filename"))
                .col(text("document_type"))
                .col(text("source_channel"))
                .col(text("actor"))
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "documents_dossier",
            "documents",
            &["dossier_id", "id"],
            false,
        )
        .await?;
        index(m, "documents_sha", "documents", &["sha256"], false).await?;

        m.create_table(
            Table::create()
                .table(a("dossier_links"))
                .col(id_pk())
                .col(ColumnDef::new(a("dossier_id")).string().not_null())
                .col(ColumnDef::new(a("kind")).string().not_null())
                .col(ColumnDef::new(a("ref_id")).string().not_null())
                .col(text("status"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "dossier_links_unique",
            "dossier_links",
            &["dossier_id", "kind", "ref_id"],
            true,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("dossier_citizens"))
                .col(id_pk())
                .col(ColumnDef::new(a("dossier_id")).string().not_null())
                .col(ColumnDef::new(a("citizen_id")).string().not_null())
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "dossier_citizens_unique",
            "dossier_citizens",
            &["dossier_id", "citizen_id"],
            true,
        )
        .await?;
        index(
            m,
            "dossier_citizens_by_citizen",
            "dossier_citizens",
            &["citizen_id"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("dossier_timers"))
                .col(id_pk())
                .col(ColumnDef::new(a("dossier_id")).string().not_null())
                // The state entry it was armed for: a later entry re-arms.
                .col(ColumnDef::new(a("state")).string().not_null())
                .col(ColumnDef::new(a("revision")).big_integer().not_null())
                .col(ColumnDef::new(a("timer_index")).integer().not_null())
                .col(ColumnDef::new(a("kind")).string().not_null())
                .col(ts("due_at"))
                .col(ts_null("fired_at"))
                .col(ts_null("cancelled_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "dossier_timers_due",
            "dossier_timers",
            &["fired_at", "cancelled_at", "due_at"],
            false,
        )
        .await?;
        index(
            m,
            "dossier_timers_unique",
            "dossier_timers",
            &["dossier_id", "revision", "timer_index"],
            true,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("dossier_transitions"))
                .col(id_pk())
                .col(ColumnDef::new(a("dossier_id")).string().not_null())
                .col(ColumnDef::new(a("from_state")).string().not_null())
                .col(ColumnDef::new(a("to_state")).string().not_null())
                .col(ColumnDef::new(a("cause")).string().not_null())
                .col(ColumnDef::new(a("actor")).string().not_null())
                .col(text("reason"))
                .col(ColumnDef::new(a("request_id")).string().null().unique_key())
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "dossier_transitions_dossier",
            "dossier_transitions",
            &["dossier_id", "created_at"],
            false,
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("citizen_merges"))
                .col(id_pk())
                .col(ColumnDef::new(a("target_id")).string().not_null())
                .col(ColumnDef::new(a("source_id")).string().not_null())
                .col(ColumnDef::new(a("actor")).string().not_null())
                .col(text("reason"))
                // JSON: ids of the contacts, dossiers and entries that moved.
                .col(ColumnDef::new(a("moved")).text().not_null())
                .col(ts("created_at"))
                .col(ts_null("split_at"))
                .col(text("split_actor"))
                .col(text("split_reason"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(a("audit_log"))
                .col(id_pk())
                .col(ColumnDef::new(a("actor")).string().not_null())
                .col(ColumnDef::new(a("action")).string().not_null())
                .col(ColumnDef::new(a("resource")).string().not_null())
                .col(text("detail"))
                .col(ts("created_at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "audit_by_resource",
            "audit_log",
            &["resource", "id"],
            false,
        )
        .await?;
        index(m, "audit_by_actor", "audit_log", &["actor", "id"], false).await?;

        // Existing rows: the state was entered when the dossier was last updated.
        m.get_connection()
            .execute_unprepared(
                "UPDATE dossiers SET state_entered_at = updated_at WHERE state_entered_at IS NULL",
            )
            .await?;
        Ok(())
    }
}
