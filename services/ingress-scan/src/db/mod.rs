//! The scan ingress's tables: every file seen (by SHA-256, so a file is
//! never processed twice, across restarts too) and the outbox of its intake
//! events.

pub mod entities;
mod m0001_init;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m0001_init::Migration)]
    }
}
