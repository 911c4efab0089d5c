//! sea-orm entities of the counter tables.

pub mod ticket {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tickets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Client idempotency key: a retried request returns this ticket.
        pub request_id: Option<String>,
        pub number: String,
        pub service: String,
        pub site: String,
        /// Paris calendar day of the numbering sequence (YYYY-MM-DD).
        pub day: String,
        pub intake_event_id: String,
        pub issued_at: DateTimeUtc,
        /// Priority category ("" for normal).
        pub priority: String,
        /// waiting, called, in_service, done, no_show.
        pub status: String,
        /// Since when it waits in its current service (issue or transfer).
        pub waiting_since: DateTimeUtc,
        /// `waiting_since` minus the priority weight: the calling order.
        pub rank_at: DateTimeUtc,
        pub desk: Option<String>,
        pub call_time: Option<DateTimeUtc>,
        pub start_time: Option<DateTimeUtc>,
        pub finish_time: Option<DateTimeUtc>,
        pub no_show_time: Option<DateTimeUtc>,
        pub recalls: i32,
        pub transferred_from: Option<String>,
        /// Appointment check-in: the booking and its start.
        pub booking_id: Option<String>,
        pub appointment_at: Option<DateTimeUtc>,
        /// Secret of the citizen's ticket page (the kiosk's QR code).
        pub public_token: Option<String>,
        /// The agent who last called it to a desk.
        pub agent_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
