//! sea-orm entities of the signature tables.

use sea_orm::entity::prelude::*;

/// Where a signature request, or one of its signers, stands. Stored as its
/// lower-case name (a signer is only ever pending, signed or declined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum Status {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "signed")]
    Signed,
    #[sea_orm(string_value = "declined")]
    Declined,
    #[sea_orm(string_value = "expired")]
    Expired,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
    #[sea_orm(string_value = "locked")]
    Locked,
}

impl Status {
    /// The stored name: also what events, metrics and the dossier link carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Signed => "signed",
            Status::Declined => "declined",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Locked => "locked",
        }
    }
}

/// Where a one-time code stands. Stored as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum CodeStatus {
    /// May still be confirmed.
    #[sea_orm(string_value = "active")]
    Active,
    /// Confirmed once: never again.
    #[sea_orm(string_value = "used")]
    Used,
    /// A newer code was sent.
    #[sea_orm(string_value = "superseded")]
    Superseded,
    /// Too many wrong tries.
    #[sea_orm(string_value = "exhausted")]
    Exhausted,
    /// Past its validity.
    #[sea_orm(string_value = "expired")]
    Expired,
    /// Its request was closed or locked.
    #[sea_orm(string_value = "void")]
    Void,
}

pub mod request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signature_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Client idempotency key.
        pub request_id: Option<String>,
        pub dossier_id: String,
        pub title: String,
        pub process_template: String,
        pub document_sha256: String,
        pub document_size: i64,
        pub consent_text: String,
        pub status: super::Status,
        pub expire_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub completed_at: Option<DateTimeUtc>,
        pub creator: String,
        pub signed_sha256: Option<String>,
        pub evidence_sha256: Option<String>,
        pub key_id: Option<String>,
        pub decline_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signer {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub request_id: String,
        pub position: i32,
        pub name: String,
        /// E.164; never logged, never in events.
        pub phone: String,
        /// Secret of the signer's page link.
        pub token: String,
        /// Pending, signed or declined.
        pub status: super::Status,
        pub signed_at: Option<DateTimeUtc>,
        pub codes_sent: i32,
        pub last_code_at: Option<DateTimeUtc>,
        pub sign_ip: Option<String>,
        pub sign_user_agent: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod code {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub signer_id: String,
        pub request_id: String,
        /// HMAC-SHA256 of the code (hex).
        pub hash: String,
        pub created_at: DateTimeUtc,
        pub expire_at: DateTimeUtc,
        pub attempts: i32,
        pub status: super::CodeStatus,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signature_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub request_id: String,
        pub signer_id: String,
        pub kind: String,
        pub outcome: String,
        pub at: DateTimeUtc,
        pub ip: String,
        pub user_agent: String,
        pub actor: String,
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
