//! Process titles by id (for the queue's rows and the forms), read from the
//! dossier role and kept a minute.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guichet_proto::dossier::v1 as dpb;
use tokio::sync::RwLock;

use crate::clients::Clients;
use crate::session::Session;

const KEEP: Duration = Duration::from_secs(60);

/// When the list was read, and the list.
type Cached = Option<(Instant, Arc<Vec<dpb::Process>>)>;

#[derive(Clone, Default)]
pub struct Catalog {
    cached: Arc<RwLock<Cached>>,
}

impl Catalog {
    /// The published processes (latest versions), or an empty list when the
    /// dossier role does not answer (the pages say so where it matters).
    pub async fn processes(
        &self,
        clients: &Clients,
        agent: &Session,
    ) -> Result<Arc<Vec<dpb::Process>>, tonic::Status> {
        if let Some((at, list)) = self.cached.read().await.as_ref()
            && at.elapsed() < KEEP
        {
            return Ok(list.clone());
        }
        let mut c = clients.dossier.clone();
        let res = c
            .list_processes(clients.request(agent, dpb::ListProcessesRequest::default()))
            .await?
            .into_inner();
        let mut list = res.processes;
        list.sort_by(|a, b| a.title.cmp(&b.title));
        let list = Arc::new(list);
        *self.cached.write().await = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    pub async fn titles(&self, clients: &Clients, agent: &Session) -> BTreeMap<String, String> {
        match self.processes(clients, agent).await {
            Ok(list) => list
                .iter()
                .map(|p| (p.id.clone(), p.title.clone()))
                .collect(),
            Err(_) => BTreeMap::new(),
        }
    }
}
