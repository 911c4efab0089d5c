//! The appointment tables: bookings, the slot claims that make double
//! booking impossible, idempotency keys, ANTS pre-application numbers, the
//! durable jobs (timers and retried calls) and the waiting list.

pub mod entities;
mod m0001_init;
mod m0002_exceptions;
mod m0003_lookup;
mod m0004_durable_jobs;
mod m0005_slot_versions;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_exceptions::Migration),
            Box::new(m0003_lookup::Migration),
            Box::new(m0004_durable_jobs::Migration),
            Box::new(m0005_slot_versions::Migration),
        ]
    }
}
