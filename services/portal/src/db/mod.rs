//! The portal's own tables: local accounts, server-side sessions, the OIDC
//! logins in flight, each agent's preferences and the hall's devices
//! (kiosks, boards). It keeps nothing of the
//! other roles' data.

pub mod entities;
mod m0001_init;
mod m0002_devices;
mod m0003_text_modules;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_devices::Migration),
            Box::new(m0003_text_modules::Migration),
        ]
    }
}
