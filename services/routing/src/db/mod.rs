//! Routing's tables: the unified queue and agent presence.

pub mod entities;
mod m0001_init;
mod m0002_unified_queue;
mod m0003_citizen_candidates;
mod m0004_callback_attempts;
mod m0005_desk_steps;
mod m0006_rules_studio;
mod m0007_threading_moves_out;
mod m0008_item_warnings;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_init::Migration),
            Box::new(m0002_unified_queue::Migration),
            Box::new(m0003_citizen_candidates::Migration),
            Box::new(m0004_callback_attempts::Migration),
            Box::new(m0005_desk_steps::Migration),
            Box::new(m0006_rules_studio::Migration),
            Box::new(m0007_threading_moves_out::Migration),
            Box::new(m0008_item_warnings::Migration),
        ]
    }
}
