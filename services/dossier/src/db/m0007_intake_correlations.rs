//! One row per intake request routed by `CorrelateIntake`: the answer it
//! gave, written in the routing transaction, so a redelivered event gets
//! the same answer and writes nothing again.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0007_intake_correlations"
    }
}

fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("intake_correlations"))
                .if_not_exists()
                .col(col("request_id").string().not_null().primary_key())
                // The CorrelateIntakeResponse, protobuf-encoded, without the
                // dossier (read fresh on a replay).
                .col(col("response").binary().not_null())
                .col(col("dossier_id").string().not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new("intake_correlations"))
                .to_owned(),
        )
        .await
    }
}
