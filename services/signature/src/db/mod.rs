//! The signature tables: requests, signers, one-time codes (hashes only),
//! the append-only event trail, the job table (dossier calls retried until
//! they succeed) and the outbox.

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
