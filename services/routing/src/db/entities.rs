//! sea-orm entities of the routing tables.

pub mod work_item {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "work_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// One work item per intake event, whatever the redeliveries.
        pub intake_event_id: String,
        pub channel: String,
        /// pending, offered, assigned, wrapping, completed, cancelled.
        pub status: String,
        pub priority: i32,
        pub dossier_id: String,
        pub dossier_reference: String,
        pub citizen_id: String,
        pub process_id: String,
        pub summary: String,
        pub agent_id: Option<String>,
        pub outcome: Option<String>,
        pub enter_time: DateTimeUtc,
        pub assign_time: Option<DateTimeUtc>,
        pub complete_time: Option<DateTimeUtc>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod agent {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        /// The agent's token subject.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// available, busy, away, offline.
        pub presence: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
