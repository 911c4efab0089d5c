//! Issue 14: one claim per contact point (a phone number or an email
//! address), so two intakes from one new number resolved at the same time
//! create one citizen. `citizen_contacts` is unique per citizen, not per
//! number (a landline is shared by a household), so it cannot carry that
//! guarantee itself; the claim is taken by whoever first creates a citizen
//! for a point nobody holds, in the same transaction as the citizen.

use guichet_platform::migration::{ident as a, string, timestamp as ts};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_contact_claims"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(a("citizen_contact_claims"))
                .col(string("kind"))
                .col(string("value"))
                .col(string("citizen_id"))
                .col(ts("created_at"))
                .primary_key(Index::create().col(a("kind")).col(a("value")))
                .to_owned(),
        )
        .await?;
        // Every point already held is claimed by its earliest holder.
        m.get_connection()
            .execute_unprepared(
                "INSERT INTO citizen_contact_claims (kind, value, citizen_id, created_at) \
                 SELECT kind, value, MIN(citizen_id), MIN(created_at) \
                 FROM citizen_contacts GROUP BY kind, value",
            )
            .await?;
        Ok(())
    }
}
