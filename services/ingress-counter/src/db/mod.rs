//! The counter's tables: issued tickets and per-day ticket counters.

pub mod entities;
mod m0001_init;
mod m0002_visits;
mod m0003_appointments;
mod m0004_public_token;
mod m0005_agent;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_visits::Migration),
            Box::new(m0003_appointments::Migration),
            Box::new(m0004_public_token::Migration),
            Box::new(m0005_agent::Migration),
        ]
    }
}
