//! sea-orm entities of the routing tables.

pub mod work_item {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "work_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// One work item per intake event, whatever the redeliveries.
        pub intake_event_id: String,
        pub channel: String,
        /// pending, offered, assigned, wrapping, completed, cancelled.
        pub status: String,
        pub priority: i32,
        pub dossier_id: String,
        pub dossier_reference: String,
        pub citizen_id: String,
        pub process_id: String,
        pub summary: String,
        pub agent_id: Option<String>,
        pub outcome: Option<String>,
        pub enter_time: DateTimeUtc,
        pub assign_time: Option<DateTimeUtc>,
        pub complete_time: Option<DateTimeUtc>,
        pub updated_at: DateTimeUtc,
        pub queue_id: String,
        pub previous_queue_id: Option<String>,
        /// The rule's priority; `priority` adds escalation and ageing.
        pub base_priority: i32,
        /// Points added by SLA escalation.
        pub escalation: i32,
        /// Required skills, comma-separated (also rows of work_item_skills).
        pub skills: String,
        /// SLA due time; NO_SLA when none (keeps one sort order on both backends).
        pub sla_due: Option<DateTimeUtc>,
        pub sla_warn: Option<DateTimeUtc>,
        /// none, ok, near, breached.
        pub sla_state: String,
        pub rule_id: String,
        pub correlation: String,
        pub offer_time: Option<DateTimeUtc>,
        pub offer_expires: Option<DateTimeUtc>,
        /// Agents who declined or let the offer of this item time out: `,a,b,`.
        pub declined_by: String,
        pub wrap_time: Option<DateTimeUtc>,
        pub cancel_time: Option<DateTimeUtc>,
        /// Citizens the request may belong to, for the agent to confirm:
        /// JSON `[{"citizen_id", "confidence", "why"}]`.
        pub candidates: String,
        pub callback_attempts: i32,
        pub callback_unanswered: i32,
        /// What the agent must know before trusting the request: JSON list
        /// of French sentences.
        pub warnings: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod agent {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        /// The agent's token subject.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// available, busy, away, offline.
        pub presence: String,
        pub updated_at: DateTimeUtc,
        pub accept_offers: bool,
        /// Comma-separated.
        pub skills: String,
        /// Comma-separated queue ids; empty: the default queue.
        pub queues: String,
        /// `channel=n` pairs, comma-separated; missing channels use the defaults.
        pub capacities: String,
        /// Offers in a row let time out.
        pub missed_offers: i32,
        /// For fair distribution: offers go to the agent idle longest.
        pub last_assigned_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod desk_step {
    use sea_orm::entity::prelude::*;

    /// A counter desk's step waiting for its request to be enqueued.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "desk_steps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub intake_event_id: String,
        /// "called" or "ended".
        pub kind: String,
        pub agent_id: String,
        pub outcome: String,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod rules_publication {
    use sea_orm::entity::prelude::*;

    /// A rule set published in the studio: the audit trail, and (newest
    /// first) the rules every replica puts in force.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rules_publications")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub version: String,
        #[sea_orm(column_type = "Text")]
        pub text: String,
        pub author: String,
        pub author_name: String,
        #[sea_orm(column_type = "Text")]
        pub reason: String,
        pub published_at: DateTimeUtc,
        /// The file written (studio_writes = "file"); empty: the database.
        pub written_to: String,
        pub previous_version: String,
        pub rule_count: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod intake_input {
    use sea_orm::entity::prelude::*;

    /// What classification read of one request (the intake event, protobuf,
    /// without the citizen's name and address), to try rules on it later.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "intake_inputs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub intake_event_id: String,
        pub event: Vec<u8>,
        pub received_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
