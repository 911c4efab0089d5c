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
        /// Calendar day of the numbering sequence (YYYY-MM-DD).
        pub day: String,
        pub intake_event_id: String,
        pub issued_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
