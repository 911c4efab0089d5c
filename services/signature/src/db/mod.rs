//! The signature tables: requests, signers, one-time codes (hashes only),
//! the append-only event trail, the durable jobs (dossier calls retried until
//! they succeed or are given up) and the outbox.

pub mod entities;
mod m0001_init;
mod m0002_durable_jobs;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_durable_jobs::Migration),
        ]
    }
}
