//! sea-orm entities of the scan tables.

pub mod scan_file {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "scan_files")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Content address of the original; unique: the dedupe key.
        pub sha256: String,
        pub filename: String,
        pub media_type: String,
        pub size_bytes: i64,
        /// `folder` or `upload`.
        pub source: String,
        pub batch_id: String,
        /// `published` or `quarantined`.
        pub state: String,
        /// Quarantine reason (proto enum name without prefix), when quarantined.
        pub reason: Option<String>,
        pub detail: String,
        pub intake_event_id: Option<String>,
        pub page_count: i32,
        pub ocr_confidence: f64,
        pub release_count: i32,
        pub received_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
