//! Dossier's tables: entities and migrations. Only this role touches them.

pub mod entities;
mod m0001_init;
mod m0002_process_engine;
mod m0003_contact_claims;
mod m0004_durable_jobs;
mod m0005_follow_key;
mod m0006_process_studio;
mod m0007_intake_correlations;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_process_engine::Migration),
            Box::new(m0003_contact_claims::Migration),
            Box::new(m0004_durable_jobs::Migration),
            Box::new(m0005_follow_key::Migration),
            Box::new(m0006_process_studio::Migration),
            Box::new(m0007_intake_correlations::Migration),
        ]
    }
}
