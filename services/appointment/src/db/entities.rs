//! sea-orm entities of the appointment tables.

use sea_orm::entity::prelude::*;

/// Where a booking stands. Stored as its snake-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum BookingStatus {
    #[sea_orm(string_value = "booked")]
    Booked,
    #[sea_orm(string_value = "checked_in")]
    CheckedIn,
    #[sea_orm(string_value = "seen")]
    Seen,
    #[sea_orm(string_value = "no_show")]
    NoShow,
    #[sea_orm(string_value = "cancelled_by_citizen")]
    CancelledByCitizen,
    #[sea_orm(string_value = "cancelled_by_town")]
    CancelledByTown,
}

impl BookingStatus {
    /// The stored name: also what events and the dossier link carry.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Booked => "booked",
            BookingStatus::CheckedIn => "checked_in",
            BookingStatus::Seen => "seen",
            BookingStatus::NoShow => "no_show",
            BookingStatus::CancelledByCitizen => "cancelled_by_citizen",
            BookingStatus::CancelledByTown => "cancelled_by_town",
        }
    }
}

impl std::fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
        pub status: super::BookingStatus,
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
