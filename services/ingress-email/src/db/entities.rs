//! sea-orm entities of the email tables.

pub mod email_message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "email_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// `in` or `out`.
        pub direction: String,
        /// Dedupe and thread key: the Message-ID without brackets, or
        /// `sha256:<hex>` of the raw message when it has none. Unique.
        pub message_key: String,
        pub message_id: String,
        pub in_reply_to: String,
        /// Space-separated Message-IDs.
        pub references: String,
        pub subject: String,
        pub from_address: String,
        pub to_address: String,
        #[sea_orm(column_type = "Text")]
        pub text_clean: String,
        #[sea_orm(column_type = "Text")]
        pub text_full: String,
        pub raw_sha256: String,
        pub size_bytes: i64,
        /// smtp, lmtp, imap; ack, reply.
        pub source: String,
        pub intake_event_id: Option<String>,
        pub dossier_id: String,
        pub dossier_reference: String,
        pub auto_submitted: bool,
        pub auto_reason: String,
        pub bounce: bool,
        /// JSON array of parts (filename, media_type, size, sha256, rejected).
        #[sea_orm(column_type = "Text")]
        pub parts: String,
        pub notification_id: String,
        /// Outbound: the caller's idempotency key (`ack:<intake id>` for
        /// acknowledgements). Unique.
        pub request_id: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod blocked_address {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "email_blocked_addresses")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub address: String,
        pub reason: String,
        pub bounce_message_id: String,
        pub blocked_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod imap_state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "email_imap_state")]
    pub struct Model {
        /// `<user>@<host>/<mailbox>`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub mailbox: String,
        pub uid_validity: i64,
        /// Highest UID published and moved.
        pub last_uid: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
