//! sea-orm entities of the appointment tables.

pub mod booking {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "bookings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub reference: String,
        /// Client idempotency key of the booking request.
        pub request_id: Option<String>,
        pub type_id: String,
        pub site_id: String,
        pub desk_id: String,
        pub start_at: DateTimeUtc,
        pub end_at: DateTimeUtc,
        pub people: i32,
        pub citizen_id: String,
        pub dossier_id: String,
        /// Where confirmations and reminders go (never logged).
        pub phone: Option<String>,
        pub email: Option<String>,
        pub status: String,
        /// Secret of the citizen's cancel/reschedule link.
        pub cancel_token: String,
        pub version: i32,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod waiter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "waiting_list")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub request_id: Option<String>,
        pub type_id: String,
        /// Comma-separated site ids; empty: any site.
        pub site_ids: String,
        pub people: i32,
        pub citizen_id: String,
        pub phone: Option<String>,
        pub email: Option<String>,
        pub before_at: DateTimeUtc,
        pub messages_sent: i32,
        /// Paris day (YYYY-MM-DD) of the last offer: one a day at most.
        pub last_message_day: String,
        pub active: bool,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod exception {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "schedule_exceptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub desk_id: String,
        /// closure, absence, extra_opening
        pub kind: String,
        pub start_at: DateTimeUtc,
        pub end_at: DateTimeUtc,
        pub reason: String,
        pub created_by: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
