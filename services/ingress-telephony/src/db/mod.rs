//! The telephony tables: calls (CTI or CDR), callback requests, outbox.

pub mod entities;
mod m0001_init;
mod m0002_caller_name;
mod m0003_extensions;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_caller_name::Migration),
            Box::new(m0003_extensions::Migration),
        ]
    }
}
