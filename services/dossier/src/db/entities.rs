//! sea-orm entities of the dossier tables.

pub mod citizen {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "citizens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub given_name: String,
        pub family_name: String,
        /// Accent- and case-insensitive "family given", for name matching.
        pub name_key: String,
        /// The request that created this citizen: makes resolution idempotent.
        pub source_request_id: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// JSON array of address lines.
        pub address_lines: String,
        pub postal_code: String,
        pub city: String,
        pub country: String,
        /// Accent- and case-insensitive address, for matching letters.
        pub address_key: String,
        pub preferred_channel: String,
        pub language: String,
        /// Set when merged into another citizen.
        pub merged_into: Option<String>,
        pub erased_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod contact {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "citizen_contacts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub citizen_id: String,
        /// `phone` (E.164) or `email` (lower-case).
        pub kind: String,
        pub value: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The first holder's claim on a contact point: unique per point, taken in
/// the transaction that creates a citizen for a point nobody holds.
pub mod contact_claim {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "citizen_contact_claims")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub value: String,
        pub citizen_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod dossier {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dossiers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub reference: String,
        pub citizen_id: String,
        pub process_id: String,
        pub process_version: i32,
        pub state: String,
        /// The request that opened this dossier: makes opening idempotent.
        pub opened_request_id: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub holder_agent: String,
        pub holder_department: String,
        /// Bumped by every change: optimistic concurrency for transitions.
        pub revision: i64,
        pub state_entered_at: Option<DateTimeUtc>,
        pub closed_at: Option<DateTimeUtc>,
        pub legal_hold: bool,
        pub legal_hold_reason: String,
        /// The process's restricted group at opening ("" when open to all).
        pub restricted_group: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod timeline {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "timeline_entries")]
    pub struct Model {
        /// UUID v7: ties in `occurred_at` are ordered by creation.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub citizen_id: String,
        pub dossier_id: Option<String>,
        pub kind: String,
        pub channel: String,
        pub occurred_at: DateTimeUtc,
        pub summary: String,
        pub actor: String,
        /// Event that produced the entry: makes recording idempotent.
        pub source_event_id: Option<String>,
        pub created_at: DateTimeUtc,
        /// Notes: `public` or `private`; empty for other entries.
        pub visibility: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod document {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "documents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub dossier_id: String,
        pub citizen_id: String,
        pub sha256: String,
        pub media_type: String,
        pub size_bytes: i64,
        pub filename: String,
        pub document_type: String,
        pub source_channel: String,
        pub actor: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod link {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dossier_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub dossier_id: String,
        pub kind: String,
        pub ref_id: String,
        pub status: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod timer {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dossier_timers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub dossier_id: String,
        pub state: String,
        pub revision: i64,
        pub timer_index: i32,
        pub kind: String,
        pub due_at: DateTimeUtc,
        pub fired_at: Option<DateTimeUtc>,
        pub cancelled_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod transition {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dossier_transitions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub dossier_id: String,
        pub from_state: String,
        pub to_state: String,
        pub cause: String,
        pub actor: String,
        pub reason: String,
        pub request_id: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod merge {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "citizen_merges")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub target_id: String,
        pub source_id: String,
        pub actor: String,
        pub reason: String,
        pub moved: String,
        pub created_at: DateTimeUtc,
        pub split_at: Option<DateTimeUtc>,
        pub split_actor: String,
        pub split_reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub actor: String,
        pub action: String,
        pub resource: String,
        pub detail: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod party {
    use sea_orm::entity::prelude::*;

    /// Another citizen concerned by a dossier.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dossier_citizens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub dossier_id: String,
        pub citizen_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod process_draft {
    use sea_orm::entity::prelude::*;

    /// A process version being worked on in the studio (one per process).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "process_drafts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub process_id: String,
        pub base_version: i32,
        pub version: i32,
        pub text: String,
        pub author: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod process_publication {
    use sea_orm::entity::prelude::*;

    /// A version published from the studio or imported.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "process_publications")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub process_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        pub text: String,
        pub published_by: String,
        pub reason: String,
        /// `database`, or the file it was written to.
        pub written_to: String,
        pub published_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod intake_correlation {
    use sea_orm::entity::prelude::*;

    /// The answer `CorrelateIntake` gave an intake request.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "intake_correlations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub response: Vec<u8>,
        pub dossier_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
