//! The portal's own tables: local accounts, server-side sessions, the OIDC
//! logins in flight and each agent's preferences. It keeps nothing of the
//! other roles' data.

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
