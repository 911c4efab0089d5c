//! The routing rules studio: process owners read the rules in force, try a
//! candidate text on real past requests and on the town's labelled examples
//! (the classification under the rules in force and under the candidate,
//! side by side), and publish it, recorded with who and why.
//!
//! A publication is a row of `rules_publications` (the audit trail) and a
//! `rules_published` event. With `studio_writes = "database"` every replica's
//! reload loop puts the newest publication in force, over the rules file or
//! the shipped rules; with `studio_writes = "file"` the deployment keeps the
//! file as the source of truth: the studio writes `rules_file` (replicas
//! read it as they always have) and records where.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use guichet_platform::auth;
use guichet_platform::grpc::{
    failed_precondition, internal, internal_err, invalid_argument, page_size,
};
use guichet_proto::convert::timestamp;
use guichet_proto::events::v1 as ev;
use guichet_proto::intake::v1::{Channel, IntakeEvent};
use guichet_proto::routing::v1 as pb;
use prost::Message;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use tonic::{Request, Status};

use crate::classification::{self, Labelled, Report};
use crate::config::Config;
use crate::db::entities::{intake_input, rules_publication, work_item};
use crate::grpc::QueueApi;
use crate::intake::Classified;
use crate::rules::{Publication, Reload, RuleSet, Rules, Source};

/// Requests tried at once (typed and past ones together).
pub const MAX_TRIAL: usize = 50;
/// The largest rules text accepted.
pub const MAX_TEXT: usize = 512 * 1024;
const MAX_REASON: usize = 2000;
const MAX_CORPUS_CHANGES: usize = 50;

/// Where publications go, and the labelled corpus rules are measured on.
pub struct Studio {
    /// `studio_writes = "file"`: the rules file is written.
    pub writes_file: bool,
    pub corpus: Vec<Labelled>,
    /// "shipped", or the town's corpus file.
    pub corpus_name: String,
}

impl Studio {
    pub fn new(config: &Config) -> Result<Studio, String> {
        let (text, name) = if config.corpus_file.trim().is_empty() {
            (classification::CORPUS.to_owned(), "shipped".to_owned())
        } else {
            let path = config.corpus_file.trim();
            (
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?,
                path.to_owned(),
            )
        };
        Ok(Studio {
            writes_file: config.studio_writes == "file",
            corpus: classification::parse_corpus(&text)?,
            corpus_name: name,
        })
    }
}

/// The rules of a set, for reading.
pub fn summaries(set: &RuleSet) -> Vec<pb::RuleSummary> {
    set.rules
        .iter()
        .map(|r| pb::RuleSummary {
            id: r.id.clone(),
            description: r.description.clone(),
            process_id: r.process.clone(),
            priority: r.priority,
            skills: r.skills.clone(),
            queue_id: r.queue.clone().unwrap_or_default(),
            sla: r.sla_text.clone(),
            conditions: r.conditions_fr(),
        })
        .collect()
}

fn publication_pb(m: rules_publication::Model) -> pb::RulesPublication {
    pb::RulesPublication {
        id: m.id,
        version: m.version,
        author: m.author,
        author_name: m.author_name,
        reason: m.reason,
        publish_time: Some(timestamp(m.published_at)),
        written_to: m.written_to,
        previous_version: m.previous_version,
        rule_count: m.rule_count.max(0) as u32,
    }
}

fn publication_of(m: &rules_publication::Model) -> Publication {
    Publication {
        id: m.id.clone(),
        author: m.author.clone(),
        author_name: m.author_name.clone(),
        reason: m.reason.clone(),
        at: m.published_at,
    }
}

/// The id of the newest publication (ids are UUID v7: time-ordered).
async fn newest_id(db: &DatabaseConnection) -> Result<Option<String>, DbErr> {
    rules_publication::Entity::find()
        .select_only()
        .column(rules_publication::Column::Id)
        .order_by_desc(rules_publication::Column::Id)
        .limit(1)
        .into_tuple::<String>()
        .one(db)
        .await
}

/// Database mode: put the newest publication in force when it is not yet
/// (the reload loop of every replica, and start-up). `None`: nothing
/// published, the file or the shipped rules stay.
pub async fn apply_newest(rules: &Rules, db: &DatabaseConnection) -> Result<Option<Reload>, DbErr> {
    let Some(id) = newest_id(db).await? else {
        return Ok(None);
    };
    if id == rules.last_publication() {
        return Ok(Some(Reload::Unchanged));
    }
    let Some(row) = rules_publication::Entity::find_by_id(id).one(db).await? else {
        return Ok(Some(Reload::Unchanged));
    };
    Ok(Some(rules.apply_published(&row.text, publication_of(&row))))
}

/// Forget the classification inputs of requests received before `before`
/// (the studio can no longer try them); returns how many.
pub async fn forget_inputs(db: &DatabaseConnection, before: DateTime<Utc>) -> Result<u64, DbErr> {
    Ok(intake_input::Entity::delete_many()
        .filter(intake_input::Column::ReceivedAt.lt(before))
        .exec(db)
        .await?
        .rows_affected)
}

fn outcome_pb(c: &Classified, rules: usize) -> pb::TrialOutcome {
    let reasons = match c.evaluations.iter().find(|e| e.matched) {
        Some(e) if !c.rule_id.is_empty() => e.reasons.clone(),
        _ => vec![format!(
            "aucune des {rules} règles ne s'applique : la demande est à qualifier"
        )],
    };
    pb::TrialOutcome {
        rule_id: c.rule_id.clone(),
        process_id: c.process_id.clone(),
        queue_id: c.queue_id.clone(),
        priority: c.priority,
        reasons,
    }
}

fn accuracy_pb(r: &Report) -> pb::CorpusAccuracy {
    pb::CorpusAccuracy {
        total: r.total() as u32,
        correct: r.correct() as u32,
        to_triage: r.missed().len() as u32,
        wrong: r.wrong().len() as u32,
        accuracy: r.accuracy(),
    }
}

fn problem_pb(e: &crate::rules::RulesError) -> pb::RulesProblem {
    pb::RulesProblem {
        line: e.line,
        column: e.column,
        message: e.message_fr.clone(),
        detail: e.to_string(),
    }
}

/// Write `text` to `path` whole: a reader never sees half a file.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp: PathBuf = path.to_path_buf();
    tmp.set_file_name(format!(
        ".{}.studio-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rules".into()),
        uuid::Uuid::now_v7()
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn text_arg(field: &str, text: &str) -> Result<(), Status> {
    if text.trim().is_empty() {
        return Err(invalid_argument(field, "is required"));
    }
    if text.len() > MAX_TEXT {
        return Err(invalid_argument(
            field,
            format!("is longer than {MAX_TEXT} bytes"),
        ));
    }
    Ok(())
}

impl QueueApi {
    fn rules(&self) -> &Rules {
        &self.classifier.rules
    }

    pub(crate) async fn get_rules(
        &self,
        _request: Request<pb::GetRoutingRulesRequest>,
    ) -> Result<pb::RoutingRules, Status> {
        let set = self.rules().current();
        let db = self.queue.db();
        let (source, file_path, publication) = match self.rules().source() {
            Source::Shipped => (pb::RulesSource::Shipped, String::new(), None),
            Source::File(p) => {
                let path = p.display().to_string();
                // The publication that wrote this text, if the studio did.
                let row = rules_publication::Entity::find()
                    .filter(rules_publication::Column::Version.eq(set.version.clone()))
                    .filter(rules_publication::Column::WrittenTo.eq(path.clone()))
                    .order_by_desc(rules_publication::Column::Id)
                    .one(db)
                    .await
                    .map_err(internal_err("find publication"))?;
                (pb::RulesSource::File, path, row.map(publication_pb))
            }
            Source::Published(p) => {
                let row = rules_publication::Entity::find_by_id(p.id.clone())
                    .one(db)
                    .await
                    .map_err(internal_err("find publication"))?;
                (
                    pb::RulesSource::Database,
                    String::new(),
                    row.map(publication_pb),
                )
            }
        };
        Ok(pb::RoutingRules {
            text: set.text.clone(),
            version: set.version.clone(),
            source: source as i32,
            file_path: if file_path.is_empty() && self.studio.writes_file {
                self.rules()
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            } else {
                file_path
            },
            publication,
            last_reload_error: self.rules().last_error(),
            rules: summaries(&set),
            studio_writes: if self.studio.writes_file {
                "file"
            } else {
                "database"
            }
            .into(),
            triage_process_id: self.classifier.triage_process.clone(),
        })
    }

    pub(crate) async fn try_rules(
        &self,
        request: Request<pb::TryRoutingRulesRequest>,
    ) -> Result<pb::RulesTrial, Status> {
        let req = request.into_inner();
        text_arg("candidate_text", &req.candidate_text)?;
        if req.requests.len() + req.work_item_ids.len() > MAX_TRIAL {
            return Err(invalid_argument(
                "requests",
                format!("at most {MAX_TRIAL} requests and work items at once"),
            ));
        }
        let now = self.queue.now();
        // The requests, as classification reads them.
        let mut tried: Vec<(pb::TrialResult, Option<IntakeEvent>)> = Vec::new();
        for (i, r) in req.requests.iter().enumerate() {
            let channel = r.channel();
            if channel == Channel::Unspecified {
                return Err(invalid_argument(
                    &format!("requests[{i}].channel"),
                    "is required",
                ));
            }
            if r.subject.trim().is_empty() && r.body.trim().is_empty() {
                return Err(invalid_argument(
                    &format!("requests[{i}].body"),
                    "a subject or a body is required",
                ));
            }
            let event = IntakeEvent {
                id: format!("essai-{i}"),
                channel: channel as i32,
                received_at: Some(timestamp(now)),
                subject: r.subject.clone(),
                body: r.body.clone(),
                ..Default::default()
            };
            tried.push((
                pb::TrialResult {
                    summary: crate::intake::summary(&event),
                    channel: channel as i32,
                    ..Default::default()
                },
                Some(event),
            ));
        }
        for (i, id) in req.work_item_ids.iter().enumerate() {
            let field = format!("work_item_ids[{i}]");
            let id = id.trim();
            if id.is_empty() {
                return Err(invalid_argument(&field, "is empty"));
            }
            let item = work_item::Entity::find_by_id(id.to_owned())
                .one(self.queue.db())
                .await
                .map_err(internal_err("find work item"))?
                .ok_or_else(|| invalid_argument(&field, format!("no work item `{id}`")))?;
            let input = intake_input::Entity::find_by_id(item.intake_event_id.clone())
                .one(self.queue.db())
                .await
                .map_err(internal_err("find classification input"))?;
            let event = input.and_then(|i| IntakeEvent::decode(i.event.as_slice()).ok());
            let result = pb::TrialResult {
                work_item_id: item.id.clone(),
                summary: item.summary.clone(),
                channel: Channel::from_slug(&item.channel).unwrap_or(Channel::Unspecified) as i32,
                recorded_rule_id: item.rule_id.clone(),
                recorded_process_id: item.process_id.clone(),
                error: if event.is_none() {
                    "Le texte de cette demande n'est pas conservé (arrivée avant le studio des \
                     règles, ou plus ancienne que la durée de conservation) : elle ne peut pas être \
                     essayée."
                        .into()
                } else {
                    String::new()
                },
                ..Default::default()
            };
            tried.push((result, event));
        }

        let running = self.rules().current();
        let candidate = RuleSet::check(&req.candidate_text, self.rules().queues());
        let triage = self.classifier.triage_process.clone();
        // The labelled corpus is CPU work: off the async workers.
        let (running_report, candidate_report) = {
            let (studio, set, wanted) = (self.studio.clone(), running.clone(), candidate.clone());
            tokio::task::spawn_blocking(move || {
                let before = classification::evaluate(&set, &studio.corpus, &triage);
                let after = wanted
                    .ok()
                    .map(|c| classification::evaluate(&c, &studio.corpus, &triage));
                (before, after)
            })
            .await
            .map_err(internal_err("measure on the labelled corpus"))?
        };
        let mut trial = pb::RulesTrial {
            running_version: running.version.clone(),
            running_accuracy: Some(accuracy_pb(&running_report)),
            corpus: self.studio.corpus_name.clone(),
            ..Default::default()
        };
        match (&candidate, candidate_report) {
            (Ok(set), Some(report)) => {
                trial.candidate_version = set.version.clone();
                trial.candidate_rules = summaries(set);
                trial.candidate_accuracy = Some(accuracy_pb(&report));
                trial.corpus_changes = self
                    .studio
                    .corpus
                    .iter()
                    .zip(running_report.outcomes.iter().zip(&report.outcomes))
                    .filter(|(_, (b, a))| b.got != a.got)
                    .take(MAX_CORPUS_CHANGES)
                    .map(|(l, (b, a))| pb::CorpusChange {
                        id: l.id.clone(),
                        subject: if l.subject.trim().is_empty() {
                            l.body.chars().take(120).collect()
                        } else {
                            l.subject.clone()
                        },
                        expected_process_id: l.expected.clone(),
                        before_process_id: b.got.clone(),
                        after_process_id: a.got.clone(),
                    })
                    .collect();
            }
            (Err(e), _) => trial.problems.push(problem_pb(e)),
            // A valid candidate is always measured.
            (Ok(_), None) => {}
        }
        for (mut result, event) in tried {
            if let Some(event) = event {
                let before = self.classifier.classify_with(&running, &event);
                result.before = Some(outcome_pb(&before, running.rules.len()));
                if let Ok(set) = &candidate {
                    let after = self.classifier.classify_with(set, &event);
                    result.changed = before.rule_id != after.rule_id
                        || before.process_id != after.process_id
                        || before.queue_id != after.queue_id
                        || before.priority != after.priority;
                    result.after = Some(outcome_pb(&after, set.rules.len()));
                }
            }
            trial.results.push(result);
        }
        Ok(trial)
    }

    pub(crate) async fn publish_rules(
        &self,
        request: Request<pb::PublishRoutingRulesRequest>,
    ) -> Result<pb::RulesPublication, Status> {
        let caller = auth::caller(&request)?;
        let req = request.into_inner();
        text_arg("text", &req.text)?;
        let reason = req.reason.trim();
        if reason.is_empty() {
            return Err(invalid_argument("reason", "is required"));
        }
        if reason.chars().count() > MAX_REASON {
            return Err(invalid_argument(
                "reason",
                format!("is longer than {MAX_REASON} characters"),
            ));
        }
        let set = RuleSet::check(&req.text, self.rules().queues())
            .map_err(|e| invalid_argument("text", e.to_string()))?;
        let running = self.rules().current();
        if !req.base_version.trim().is_empty() && req.base_version.trim() != running.version {
            return Err(failed_precondition(
                "CONFLICT",
                "rules",
                format!(
                    "the rules in force changed since version {} (now {}): try the text again on them",
                    req.base_version.trim(),
                    running.version
                ),
            ));
        }
        if set.version == running.version {
            return Err(invalid_argument("text", "is the rules in force already"));
        }
        let author_name = if req.author_name.trim().is_empty() {
            caller.subject.clone()
        } else {
            req.author_name.trim().chars().take(200).collect()
        };
        let now: DateTime<Utc> = self.queue.now();
        let written_to = if self.studio.writes_file {
            self.rules()
                .path()
                .map(|p| p.display().to_string())
                .ok_or_else(|| {
                    internal("publish rules", "studio_writes = file without rules_file")
                })?
        } else {
            String::new()
        };
        let row = rules_publication::Model {
            id: uuid::Uuid::now_v7().to_string(),
            version: set.version.clone(),
            text: req.text.clone(),
            author: caller.subject.clone(),
            author_name,
            reason: reason.to_owned(),
            published_at: now,
            written_to: written_to.clone(),
            previous_version: running.version.clone(),
            rule_count: set.rules.len() as i32,
        };
        let outbox = self.queue.outbox();
        let staged = outbox.domain_event(
            "routing",
            "rules_published",
            format!("rules/{}", row.id),
            &ev::RulesPublished {
                publication_id: row.id.clone(),
                version: row.version.clone(),
                previous_version: row.previous_version.clone(),
                rule_count: set.rules.len() as u32,
                author: row.author.clone(),
                reason: row.reason.clone(),
                written_to: written_to.clone(),
                published_at: Some(timestamp(now)),
            },
        );
        let txn = self
            .queue
            .db()
            .begin()
            .await
            .map_err(internal_err("begin publication"))?;
        rules_publication::ActiveModel {
            id: Set(row.id.clone()),
            version: Set(row.version.clone()),
            text: Set(row.text.clone()),
            author: Set(row.author.clone()),
            author_name: Set(row.author_name.clone()),
            reason: Set(row.reason.clone()),
            published_at: Set(row.published_at),
            written_to: Set(row.written_to.clone()),
            previous_version: Set(row.previous_version.clone()),
            rule_count: Set(row.rule_count),
        }
        .insert(&txn)
        .await
        .map_err(internal_err("record publication"))?;
        outbox
            .stage(&txn, &staged)
            .await
            .map_err(internal_err("stage rules_published"))?;
        // The file is written inside the transaction: a file that cannot be
        // written leaves no publication behind.
        if let Some(path) = self.studio.writes_file.then(|| PathBuf::from(&written_to)) {
            write_file(&path, &req.text).map_err(|e| {
                tracing::error!(error = %e, path = %path.display(), "cannot write the rules file");
                Status::failed_precondition(format!(
                    "the rules file {} cannot be written: {e}",
                    path.display()
                ))
            })?;
        }
        txn.commit()
            .await
            .map_err(internal_err("commit publication"))?;
        outbox.notify();
        let applied = if self.studio.writes_file {
            self.rules().reload()
        } else {
            self.rules()
                .apply_published(&row.text, publication_of(&row))
        };
        if let Reload::Refused(e) = applied {
            tracing::warn!(error = %e, "published rules refused on this replica");
        }
        metrics::counter!("guichet_routing_rules_published_total").increment(1);
        tracing::info!(
            publication_id = %row.id,
            version = %row.version,
            previous_version = %row.previous_version,
            author = %row.author,
            written_to = %row.written_to,
            rules = row.rule_count,
            "classification rules published in the studio"
        );
        Ok(publication_pb(row))
    }

    pub(crate) async fn list_publications(
        &self,
        request: Request<pb::ListRulesPublicationsRequest>,
    ) -> Result<pb::ListRulesPublicationsResponse, Status> {
        let req = request.into_inner();
        let size = page_size(req.page_size, 20, 200)?;
        let mut q = rules_publication::Entity::find().order_by_desc(rules_publication::Column::Id);
        if !req.page_token.is_empty() {
            q = q.filter(rules_publication::Column::Id.lt(req.page_token.clone()));
        }
        let mut rows = q
            .limit(size + 1)
            .all(self.queue.db())
            .await
            .map_err(internal_err("list publications"))?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|r| r.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListRulesPublicationsResponse {
            publications: rows.into_iter().map(publication_pb).collect(),
            next_page_token: next,
        })
    }
}
