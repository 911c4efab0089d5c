//! The email ingress's tables: every message received or sent (the dedupe
//! key and the thread ↔ dossier map), addresses blocked after a bounce, the
//! IMAP position per mailbox, and the outbox.

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
