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
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
