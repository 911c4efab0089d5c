//! sea-orm entities of the notification tables.

pub mod notification {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifications")]
    pub struct Model {
        /// The request id (idempotency key).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// "sms" or "email".
        pub channel: String,
        /// E.164 number or lower-cased address (never logged).
        pub recipient: String,
        pub template: String,
        pub dossier_id: String,
        pub requested_by: String,
        /// The NotificationRequest as received (protobuf).
        pub request: Vec<u8>,
        pub status: String,
        /// Attempts that reached the provider or failed trying.
        pub attempts: i32,
        /// When the worker should try (again); none once terminal.
        pub next_attempt_at: Option<DateTimeUtc>,
        pub not_after: Option<DateTimeUtc>,
        pub last_error: Option<String>,
        pub provider_message_id: Option<String>,
        /// Email: the Message-ID sent (stable across retries).
        pub message_id: Option<String>,
        pub segments: i32,
        pub encoding: String,
        pub lease_owner: Option<String>,
        pub lease_until: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub sent_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod suppression {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "suppressions")]
    pub struct Model {
        /// Lower-cased address the email channel saw bounce.
        #[sea_orm(primary_key, auto_increment = false)]
        pub address: String,
        pub reason: String,
        pub bounce_message_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod template_override {
    use sea_orm::entity::prelude::*;

    /// A template's wording changed from the process studio.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "template_overrides")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub text: String,
        pub updated_by: String,
        pub reason: String,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod template_change {
    use sea_orm::entity::prelude::*;

    /// One change of a template's wording from the studio (the audit).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "template_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub template_id: String,
        /// `update` or `reset`.
        pub action: String,
        pub text: String,
        pub actor: String,
        pub reason: String,
        pub changed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
