//! Issue 18: a counter desk's step (a ticket called, a visit ended) that
//! arrives before routing has the ticket's request waits here, and is
//! applied when the request is enqueued: the two streams may come in any
//! order, and nothing is lost to a retry limit.

use guichet_platform::migration::{ident as a, index, string, timestamp};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_desk_steps"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("desk_steps"))
                // The counter event's id: one row per event, redelivered or not.
                .col(string("event_id").primary_key())
                .col(string("intake_event_id"))
                // "called" or "ended".
                .col(string("kind"))
                .col(string("agent_id"))
                .col(string("outcome"))
                .col(timestamp("at"))
                .to_owned(),
        )
        .await?;
        index(
            m,
            "desk_steps_intake",
            "desk_steps",
            &["intake_event_id"],
            false,
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(a("desk_steps")).to_owned())
            .await
    }
}
