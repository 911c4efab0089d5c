//! The notification tables: the delivery outbox (one row per requested
//! message, unique on the request id), the suppression list, and the
//! platform outbox for status events.

pub mod entities;
mod m0001_init;
mod m0002_template_overrides;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_template_overrides::Migration),
        ]
    }
}
