//! Agents: presence, skills, capacities and current loads.

use super::*;

impl Queue {
    // ---- agents ----

    pub async fn agent(&self, agent_id: &str) -> Result<Option<agent::Model>, DbErr> {
        agent::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await
    }

    /// Agents by id after `after`, optionally of one presence.
    pub async fn list_agents(
        &self,
        presence: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<agent::Model>, DbErr> {
        let mut q = agent::Entity::find()
            .order_by_asc(agent::Column::Id)
            .limit(limit);
        if let Some(p) = presence {
            q = q.filter(agent::Column::Presence.eq(p));
        }
        if let Some(a) = after {
            q = q.filter(agent::Column::Id.gt(a));
        }
        q.all(&self.db).await
    }

    pub(super) fn new_agent(&self, id: &str, presence: &str) -> agent::ActiveModel {
        agent::ActiveModel {
            id: Set(id.to_owned()),
            presence: Set(presence.to_owned()),
            updated_at: Set(self.now()),
            accept_offers: Set(false),
            skills: Set(String::new()),
            queues: Set(String::new()),
            capacities: Set(String::new()),
            missed_offers: Set(0),
            last_assigned_at: Set(None),
        }
    }

    pub async fn set_presence(
        &self,
        agent_id: &str,
        presence: &str,
        accept_offers: bool,
    ) -> Result<agent::Model, DbErr> {
        let mut a = self.new_agent(agent_id, presence);
        a.accept_offers = Set(accept_offers);
        let txn = self.db.begin().await?;
        agent::Entity::insert(a)
            .on_conflict(
                OnConflict::column(agent::Column::Id)
                    .update_columns([
                        agent::Column::Presence,
                        agent::Column::AcceptOffers,
                        agent::Column::UpdatedAt,
                        agent::Column::MissedOffers,
                    ])
                    .to_owned(),
            )
            .exec(&txn)
            .await?;
        self.stage_presence(&txn, agent_id, presence, "agent")
            .await?;
        txn.commit().await?;
        self.changed();
        agent::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("agent".into()))
    }

    pub(super) async fn stage_presence(
        &self,
        conn: &impl ConnectionTrait,
        agent_id: &str,
        presence: &str,
        cause: &str,
    ) -> Result<(), DbErr> {
        let event = self.outbox.domain_event(
            "routing",
            "agent_presence_changed",
            format!("agents/{agent_id}"),
            &ev::AgentPresenceChanged {
                agent_id: agent_id.to_owned(),
                presence: presence.to_owned(),
                cause: cause.to_owned(),
                changed_at: Some(timestamp(self.now())),
            },
        );
        self.outbox.stage(conn, &event).await
    }

    /// Set skills, queues and/or capacities (`None` keeps the current
    /// value), creating the agent, offline, if new.
    pub async fn update_agent(
        &self,
        agent_id: &str,
        skills: Option<&[String]>,
        queues: Option<&[String]>,
        capacities: Option<&BTreeMap<String, i32>>,
    ) -> Result<agent::Model, DbErr> {
        let mut a = self.new_agent(agent_id, "offline");
        let mut cols = vec![agent::Column::UpdatedAt];
        if let Some(s) = skills {
            a.skills = Set(s.join(","));
            cols.push(agent::Column::Skills);
        }
        if let Some(q) = queues {
            a.queues = Set(q.join(","));
            cols.push(agent::Column::Queues);
        }
        if let Some(c) = capacities {
            a.capacities = Set(c
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","));
            cols.push(agent::Column::Capacities);
        }
        agent::Entity::insert(a)
            .on_conflict(
                OnConflict::column(agent::Column::Id)
                    .update_columns(cols)
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        self.changed();
        agent::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("agent".into()))
    }

    /// An agent's capacity per channel (defaults, overridden per agent).
    pub fn capacities(&self, a: &agent::Model) -> BTreeMap<String, i32> {
        let mut c = self.settings.capacity.clone();
        c.extend(parse_capacities(&a.capacities));
        c
    }

    /// The queues an agent works.
    pub fn agent_queues(&self, a: &agent::Model) -> Vec<String> {
        let q = split(&a.queues);
        if q.is_empty() {
            vec![self.settings.default_queue.clone()]
        } else {
            q
        }
    }

    /// Items held (offered, assigned, wrapping) per agent and channel.
    pub async fn loads(&self, agent_id: Option<&str>) -> Result<Loads, DbErr> {
        let mut sql = Sql::new(self.db.get_database_backend());
        sql.push("SELECT agent_id, channel, COUNT(*) AS n FROM work_items WHERE status IN (")
            .list(&HELD.map(str::to_owned))
            .push(") AND agent_id IS NOT NULL");
        if let Some(a) = agent_id {
            sql.push(" AND agent_id = ").bind(a.to_owned());
        }
        sql.push(" GROUP BY agent_id, channel");
        let rows = self.db.query_all_raw(sql.build()).await?;
        let mut out: Loads = HashMap::new();
        for r in rows {
            let a: String = r.try_get("", "agent_id")?;
            let ch: String = r.try_get("", "channel")?;
            let n: i64 = r.try_get("", "n")?;
            out.entry(a).or_default().insert(ch, n as i32);
        }
        Ok(out)
    }

    /// Channels where the agent has spare capacity.
    pub(super) fn spare_channels(&self, a: &agent::Model, loads: &Loads) -> Vec<String> {
        let empty = BTreeMap::new();
        let load = loads.get(&a.id).unwrap_or(&empty);
        self.capacities(a)
            .into_iter()
            .filter(|(ch, cap)| load.get(ch).copied().unwrap_or(0) < *cap)
            .map(|(ch, _)| ch)
            .collect()
    }
}
