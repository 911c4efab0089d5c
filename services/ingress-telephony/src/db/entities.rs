//! sea-orm entities of the telephony tables.

pub mod call {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "calls")]
    pub struct Model {
        /// The PBX's call id (CTI `callId`, CDR `uniqueid`): one row per call
        /// whichever way it was learnt, so CTI and CDR never count it twice.
        #[sea_orm(primary_key, auto_increment = false)]
        pub call_id: String,
        pub direction: String,
        /// The citizen's number in E.164 (the caller inbound, the callee
        /// outbound); `None` when withheld or unreadable.
        pub citizen_phone: Option<String>,
        /// The caller ID's name, when the PBX gives one; empty otherwise.
        pub caller_name: String,
        pub anonymous: bool,
        pub blocked: bool,
        pub queue: String,
        /// "ringing", "answered", "ended".
        pub state: String,
        pub answered_by: String,
        /// The guichet agent mapped to the answering PBX user.
        pub answered_agent_id: Option<String>,
        pub cause: String,
        pub voicemail: bool,
        pub missed: bool,
        pub callback_requested: bool,
        pub waiting_seconds: Option<i32>,
        pub talk_seconds: Option<i32>,
        /// "cti" or "cdr".
        pub source: String,
        pub intake_event_id: Option<String>,
        pub started_at: DateTimeUtc,
        pub answered_at: Option<DateTimeUtc>,
        pub ended_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod callback {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "callbacks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Client idempotency key: a retried request returns this callback.
        pub request_id: Option<String>,
        pub phone: String,
        pub call_id: String,
        pub requested_by: String,
        pub intake_event_id: String,
        pub requested_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod extension {
    use sea_orm::entity::prelude::*;

    /// A PBX user or extension mapped to a guichet agent.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "extensions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub extension: String,
        pub agent_id: String,
        pub updated_by: String,
        pub update_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
