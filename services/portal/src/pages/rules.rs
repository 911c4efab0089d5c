//! Règles d'orientation (`/studio/regles`), the routing part of the process
//! studio: the classification rules in force (their text, and a table of
//! what each matches and where it sends a request), an expert editor of the
//! TOML text with a refusal shown at its line, a trial on typed or recent
//! real requests (procedure, rule and why, before and after) and on the
//! town's labelled examples (accuracy before and after), publication with a
//! required reason, and the history of publications. Every form is a plain
//! POST that re-renders the page or redirects: nothing needs JavaScript.
//! The routing role decides (process_owner; admins pass); the page asks the
//! same of the session so others get a French refusal and no studio.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use guichet_proto::intake::v1::Channel;
use guichet_proto::routing::v1 as rpb;

use super::{Layout, Section, respond_with};
use crate::views;
use crate::web::{self, Agent, App};

const WHAT: &str = "L'orientation des demandes";

/// Recent requests offered for a trial (left to triage, and all).
const RECENT: i32 = 12;

/// One rule, as read.
pub struct RuleRow {
    pub order: usize,
    pub id: String,
    pub description: String,
    pub conditions: Vec<String>,
    pub process: String,
    pub queue: String,
    pub priority: i32,
    pub sla: String,
}

/// The rules in force, as shown.
pub struct Running {
    pub text: String,
    pub version: String,
    pub source: String,
    pub published: Option<String>,
    pub reload_error: String,
    pub rules: Vec<RuleRow>,
    pub writes: String,
}

/// A recent request that may be tried.
pub struct Recent {
    pub id: String,
    pub summary: String,
    pub channel: &'static str,
    pub process: String,
    pub when: String,
    pub checked: bool,
}

/// What one rule set made of one request.
pub struct Outcome {
    pub process: String,
    pub rule: String,
    pub queue: String,
    pub priority: i32,
    pub reasons: Vec<String>,
}

pub struct ResultRow {
    pub summary: String,
    pub link: Option<String>,
    pub before: Option<Outcome>,
    pub after: Option<Outcome>,
    pub changed: bool,
    pub error: String,
}

pub struct Accuracy {
    pub label: &'static str,
    pub total: u32,
    pub correct: u32,
    pub to_triage: u32,
    pub wrong: u32,
    pub percent: String,
}

pub struct CorpusRow {
    pub subject: String,
    pub expected: String,
    pub before: String,
    pub after: String,
    /// "corrigé", "dégradé" or "autre".
    pub effect: &'static str,
    pub tag: &'static str,
}

/// A trial's outcome.
pub struct Trial {
    pub results: Vec<ResultRow>,
    pub accuracy: Vec<Accuracy>,
    pub corpus: String,
    pub changes: Vec<CorpusRow>,
    pub valid: bool,
}

/// The candidate text's refusal: where, why, and the lines around it.
pub struct Problem {
    pub line: u32,
    pub message: String,
    pub excerpt: Vec<(u32, String, bool)>,
}

pub struct HistoryRow {
    pub when: String,
    pub by: String,
    /// The token subject recorded, when it is not the name shown.
    pub by_id: String,
    pub reason: String,
    pub version: String,
    pub rules: u32,
    pub place: String,
}

#[derive(askama::Template)]
#[template(path = "studio_rules.html")]
struct RulesPage {
    layout: Layout,
    running: Section<Running>,
    /// The text in the editor, and the version it was edited from.
    text: String,
    base: String,
    problem: Option<Problem>,
    trial: Option<Trial>,
    recent: Section<Vec<Recent>>,
    typed_channel: String,
    typed_subject: String,
    typed_body: String,
    reason: String,
    /// Field → French error (texte, raison, essai).
    errors: BTreeMap<&'static str, String>,
    history: Section<Vec<HistoryRow>>,
}

impl RulesPage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors.get(field).map(String::as_str)
    }
}

fn refused() -> Response {
    web::forbidden(
        "Le studio des règles d'orientation est réservé aux responsables de procédures et aux administrateurs.",
    )
}

fn source_fr(r: &rpb::RoutingRules) -> String {
    match r.source() {
        rpb::RulesSource::Shipped => "les règles livrées avec guichet".into(),
        rpb::RulesSource::File => format!("le fichier {}", r.file_path),
        rpb::RulesSource::Database => "une publication du studio".into(),
        rpb::RulesSource::Unspecified => "source inconnue".into(),
    }
}

/// The publisher's name, else the token subject.
fn who(p: &rpb::RulesPublication) -> String {
    if p.author_name.is_empty() {
        p.author.clone()
    } else {
        p.author_name.clone()
    }
}

fn place(p: &rpb::RulesPublication) -> String {
    if p.written_to.is_empty() {
        "base de données".into()
    } else {
        format!("fichier {}", p.written_to)
    }
}

fn title(titles: &BTreeMap<String, String>, id: &str) -> String {
    match titles.get(id) {
        Some(t) => format!("{t} ({id})"),
        None => id.to_owned(),
    }
}

fn rows(rules: &[rpb::RuleSummary], titles: &BTreeMap<String, String>) -> Vec<RuleRow> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| RuleRow {
            order: i + 1,
            id: r.id.clone(),
            description: r.description.clone(),
            conditions: r.conditions.clone(),
            process: title(titles, &r.process_id),
            queue: if r.queue_id.is_empty() {
                "file unique".into()
            } else {
                r.queue_id.clone()
            },
            priority: r.priority,
            sla: if r.sla.is_empty() {
                "celui du canal".into()
            } else {
                r.sla.clone()
            },
        })
        .collect()
}

fn channel_word(c: i32) -> &'static str {
    match Channel::try_from(c).unwrap_or(Channel::Unspecified) {
        Channel::Telephony => "Appel",
        Channel::Email => "Courriel",
        Channel::Scan => "Courrier",
        Channel::Counter => "Visite",
        Channel::Unspecified => "Demande",
    }
}

fn outcome(o: &Option<rpb::TrialOutcome>, titles: &BTreeMap<String, String>) -> Option<Outcome> {
    o.as_ref().map(|o| Outcome {
        process: title(titles, &o.process_id),
        rule: if o.rule_id.is_empty() {
            "aucune".into()
        } else {
            o.rule_id.clone()
        },
        queue: o.queue_id.clone(),
        priority: o.priority,
        reasons: o.reasons.clone(),
    })
}

fn accuracy(label: &'static str, a: &Option<rpb::CorpusAccuracy>) -> Option<Accuracy> {
    a.as_ref().map(|a| Accuracy {
        label,
        total: a.total,
        correct: a.correct,
        to_triage: a.to_triage,
        wrong: a.wrong,
        percent: format!("{:.1} %", a.accuracy * 100.0).replace('.', ","),
    })
}

fn trial_view(t: &rpb::RulesTrial, titles: &BTreeMap<String, String>) -> Trial {
    let results = t
        .results
        .iter()
        .map(|r| ResultRow {
            summary: r.summary.clone(),
            link: (!r.work_item_id.is_empty()).then(|| format!("/demande/{}", r.work_item_id)),
            before: outcome(&r.before, titles),
            after: outcome(&r.after, titles),
            changed: r.changed,
            error: r.error.clone(),
        })
        .collect();
    let accuracy = [
        accuracy("Règles en vigueur", &t.running_accuracy),
        accuracy("Règles essayées", &t.candidate_accuracy),
    ]
    .into_iter()
    .flatten()
    .collect();
    let changes = t
        .corpus_changes
        .iter()
        .map(|c| {
            let (effect, tag) = if c.after_process_id == c.expected_process_id {
                ("corrigé", "tag--ok")
            } else if c.before_process_id == c.expected_process_id {
                ("dégradé", "tag--danger")
            } else {
                ("autre erreur", "tag--warn")
            };
            CorpusRow {
                subject: c.subject.clone(),
                expected: title(titles, &c.expected_process_id),
                before: title(titles, &c.before_process_id),
                after: title(titles, &c.after_process_id),
                effect,
                tag,
            }
        })
        .collect();
    Trial {
        results,
        accuracy,
        corpus: if t.corpus == "shipped" {
            "les exemples livrés avec guichet".into()
        } else {
            format!("les exemples de la commune ({})", t.corpus)
        },
        changes,
        valid: t.problems.is_empty(),
    }
}

fn problem_view(p: &rpb::RulesProblem, text: &str) -> Problem {
    let excerpt = views::excerpt(text, p.line);
    Problem {
        line: p.line,
        message: if p.line == 0 {
            p.message.clone()
        } else {
            format!("Ligne {}, colonne {} : {}", p.line, p.column, p.message)
        },
        excerpt,
    }
}

struct Input {
    text: Option<String>,
    base: String,
    typed_channel: String,
    typed_subject: String,
    typed_body: String,
    picked: Vec<String>,
    reason: String,
    problem: Option<Problem>,
    trial: Option<Trial>,
    errors: BTreeMap<&'static str, String>,
}

impl Input {
    fn empty() -> Input {
        Input {
            text: None,
            base: String::new(),
            typed_channel: "email".into(),
            typed_subject: String::new(),
            typed_body: String::new(),
            picked: Vec::new(),
            reason: String::new(),
            problem: None,
            trial: None,
            errors: BTreeMap::new(),
        }
    }
}

async fn render(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    input: Input,
    status: StatusCode,
) -> Response {
    let titles = app.catalog.titles(&app.clients, agent).await;
    let mut r = app.clients.routing.clone();
    let got = r
        .get_routing_rules(app.clients.request(agent, rpb::GetRoutingRulesRequest {}))
        .await
        .map(|x| x.into_inner());
    let triage = got
        .as_ref()
        .map(|g| g.triage_process_id.clone())
        .unwrap_or_default();
    let (text, base) = match (&input.text, &got) {
        (Some(t), _) => (t.clone(), input.base.clone()),
        (None, Ok(g)) => (g.text.clone(), g.version.clone()),
        (None, Err(_)) => (String::new(), String::new()),
    };
    let running = Section::from(
        got.map(|g| Running {
            text: g.text.clone(),
            version: g.version.clone(),
            source: source_fr(&g),
            published: g.publication.as_ref().map(|p| {
                format!(
                    "publiées le {} par {} : « {} »",
                    views::ts(&p.publish_time)
                        .map(views::when)
                        .unwrap_or_default(),
                    who(p),
                    p.reason
                )
            }),
            reload_error: g.last_reload_error.clone(),
            rules: rows(&g.rules, &titles),
            writes: if g.studio_writes == "file" {
                format!(
                    "Une publication écrit le fichier {} (les fichiers font foi dans cette installation).",
                    g.file_path
                )
            } else {
                "Une publication est enregistrée dans la base de l'orientation et s'applique à toutes les instances en quelques secondes.".into()
            },
        }),
        WHAT,
    );
    // The requests left to triage first (what a rules change is most often
    // for), then the others, newest first.
    let mut lists = Vec::new();
    for process_id in [triage, String::new()] {
        lists.push(
            r.list_work_items(app.clients.request(
                agent,
                rpb::ListWorkItemsRequest {
                    page_size: RECENT,
                    process_id,
                    ..Default::default()
                },
            ))
            .await
            .map(|l| l.into_inner().items),
        );
    }
    let recent = Section::from(
        lists
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(|lists| {
                let newest = |mut items: Vec<rpb::WorkItem>| {
                    items.sort_by(|a, b| {
                        let t =
                            |i: &rpb::WorkItem| i.enter_time.as_ref().map(|t| (t.seconds, t.nanos));
                        t(b).cmp(&t(a))
                    });
                    items
                };
                let mut seen = std::collections::HashSet::new();
                lists
                    .into_iter()
                    .flat_map(newest)
                    .filter(|i| seen.insert(i.id.clone()))
                    .map(|i| Recent {
                        checked: input.picked.contains(&i.id),
                        channel: channel_word(i.channel),
                        process: title(&titles, &i.process_id),
                        when: views::ts(&i.enter_time)
                            .map(views::when)
                            .unwrap_or_default(),
                        summary: i.summary,
                        id: i.id,
                    })
                    .collect()
            }),
        "La file d'attente",
    );
    let history = Section::from(
        r.list_rules_publications(app.clients.request(
            agent,
            rpb::ListRulesPublicationsRequest {
                page_size: 20,
                page_token: String::new(),
            },
        ))
        .await
        .map(|l| {
            l.into_inner()
                .publications
                .iter()
                .map(|p| HistoryRow {
                    when: views::ts(&p.publish_time)
                        .map(views::when)
                        .unwrap_or_default(),
                    by: who(p),
                    by_id: if who(p) == p.author {
                        String::new()
                    } else {
                        p.author.clone()
                    },
                    reason: p.reason.clone(),
                    version: p.version.clone(),
                    rules: p.rule_count,
                    place: place(p),
                })
                .collect()
        }),
        WHAT,
    );
    let page = RulesPage {
        layout: Layout::new(app, agent, "studio", headers),
        running,
        text,
        base,
        problem: input.problem,
        trial: input.trial,
        recent,
        typed_channel: input.typed_channel,
        typed_subject: input.typed_subject,
        typed_body: input.typed_body,
        reason: input.reason,
        errors: input.errors,
        history,
    };
    respond_with(app, &page, status)
}

pub async fn page(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    if !super::studio::may_edit(&agent) {
        return refused();
    }
    render(&app, &agent, &headers, Input::empty(), StatusCode::OK).await
}

/// The editor's form: the text, the version it was edited from, a typed
/// request, the recent requests picked, and the reason of a publication.
/// The picked requests come as repeated `demande` fields, which a plain
/// form decoder does not gather: the body is read as pairs.
struct RulesForm {
    csrf: String,
    texte: String,
    base: String,
    canal: String,
    objet: String,
    corps: String,
    demandes: Vec<String>,
    raison: String,
}

impl RulesForm {
    fn of(pairs: Vec<(String, String)>) -> RulesForm {
        let mut f = RulesForm {
            csrf: String::new(),
            texte: String::new(),
            base: String::new(),
            canal: String::new(),
            objet: String::new(),
            corps: String::new(),
            demandes: Vec::new(),
            raison: String::new(),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "csrf" => f.csrf = v,
                // Browsers send CRLF line ends; the rules keep LF.
                "texte" => f.texte = v.replace("\r\n", "\n"),
                "base" => f.base = v,
                "canal" => f.canal = v,
                "objet" => f.objet = v,
                "corps" => f.corps = v,
                "demande" => f.demandes.push(v),
                "raison" => f.raison = v,
                _ => {}
            }
        }
        f
    }

    fn input(&self) -> Input {
        Input {
            text: Some(self.texte.clone()),
            base: self.base.clone(),
            typed_channel: if self.canal.is_empty() {
                "email".into()
            } else {
                self.canal.clone()
            },
            typed_subject: self.objet.clone(),
            typed_body: self.corps.clone(),
            picked: self.demandes.clone(),
            reason: self.raison.clone(),
            problem: None,
            trial: None,
            errors: BTreeMap::new(),
        }
    }
}

/// The candidate tried on the typed request, the picked ones and the
/// labelled examples; the page shows before and after.
pub async fn try_rules(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    if !super::studio::may_edit(&agent) {
        return refused();
    }
    let f = RulesForm::of(pairs);
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut input = f.input();
    if f.texte.trim().is_empty() {
        input
            .errors
            .insert("texte", "Écrivez les règles à essayer.".into());
        return render(&app, &agent, &headers, input, StatusCode::BAD_REQUEST).await;
    }
    let mut requests = Vec::new();
    if !f.objet.trim().is_empty() || !f.corps.trim().is_empty() {
        let Some(channel) = Channel::from_slug(&f.canal) else {
            input
                .errors
                .insert("canal", "Choisissez le canal de la demande.".into());
            return render(&app, &agent, &headers, input, StatusCode::BAD_REQUEST).await;
        };
        requests.push(rpb::TrialRequest {
            channel: channel as i32,
            subject: f.objet.clone(),
            body: f.corps.clone(),
        });
    }
    let mut r = app.clients.routing.clone();
    let res = r
        .try_routing_rules(app.clients.request(
            &agent,
            rpb::TryRoutingRulesRequest {
                candidate_text: f.texte.clone(),
                requests,
                work_item_ids: f.demandes.clone(),
            },
        ))
        .await;
    match res {
        Ok(t) => {
            let t = t.into_inner();
            let titles = app.catalog.titles(&app.clients, &agent).await;
            let status = if let Some(p) = t.problems.first() {
                let p = problem_view(p, &f.texte);
                input.errors.insert("texte", p.message.clone());
                input.problem = Some(p);
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            input.trial = Some(trial_view(&t, &titles));
            render(&app, &agent, &headers, input, status).await
        }
        Err(e) => {
            input.errors.insert("essai", web::explain(&e, WHAT));
            let status = if e.code() == tonic::Code::InvalidArgument {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::BAD_GATEWAY
            };
            render(&app, &agent, &headers, input, status).await
        }
    }
}

/// Publish the candidate, with its reason: validated first (a refusal at
/// its line), then recorded by the routing role.
pub async fn publish(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    if !super::studio::may_edit(&agent) {
        return refused();
    }
    let f = RulesForm::of(pairs);
    if let Err(r) = web::check_csrf(&agent, &f.csrf) {
        return r;
    }
    let mut input = f.input();
    if f.raison.trim().is_empty() {
        input.errors.insert(
            "raison",
            "Dites pourquoi vous publiez ce changement : la raison est enregistrée avec la publication."
                .into(),
        );
    }
    if f.texte.trim().is_empty() {
        input
            .errors
            .insert("texte", "Écrivez les règles à publier.".into());
    }
    if !input.errors.is_empty() {
        return render(&app, &agent, &headers, input, StatusCode::BAD_REQUEST).await;
    }
    let mut r = app.clients.routing.clone();
    // The same validation as at load, for a refusal in French at its line.
    match r
        .try_routing_rules(app.clients.request(
            &agent,
            rpb::TryRoutingRulesRequest {
                candidate_text: f.texte.clone(),
                ..Default::default()
            },
        ))
        .await
    {
        Ok(t) => {
            if let Some(p) = t.into_inner().problems.first() {
                let p = problem_view(p, &f.texte);
                input.errors.insert("texte", p.message.clone());
                input.problem = Some(p);
                return render(&app, &agent, &headers, input, StatusCode::BAD_REQUEST).await;
            }
        }
        Err(e) => {
            input.errors.insert("essai", web::explain(&e, WHAT));
            return render(&app, &agent, &headers, input, StatusCode::BAD_GATEWAY).await;
        }
    }
    let res = r
        .publish_routing_rules(app.clients.request(
            &agent,
            rpb::PublishRoutingRulesRequest {
                text: f.texte.clone(),
                reason: f.raison.trim().to_owned(),
                base_version: f.base.clone(),
                author_name: agent.display_name.clone(),
            },
        ))
        .await;
    match res {
        Ok(p) => {
            let p = p.into_inner();
            let message = if p.written_to.is_empty() {
                format!(
                    "Règles publiées (version {}, {} règles) : elles orientent désormais les nouvelles demandes.",
                    p.version, p.rule_count
                )
            } else {
                format!(
                    "Règles publiées (version {}, {} règles) et écrites dans le fichier {} : elles orientent désormais les nouvelles demandes.",
                    p.version, p.rule_count, p.written_to
                )
            };
            web::redirect_with("/studio/regles", &message, app.config.secure_cookies)
        }
        Err(e) => {
            let message = if e.code() == tonic::Code::FailedPrecondition
                && web::precondition(&e) == Some("CONFLICT")
            {
                "Les règles en vigueur ont changé pendant votre modification (quelqu'un d'autre a publié). Rechargez la page, reprenez votre changement sur les nouvelles règles et essayez-le à nouveau.".to_owned()
            } else if e.code() == tonic::Code::InvalidArgument
                && e.message().contains("in force already")
            {
                "Ce texte est déjà celui des règles en vigueur : rien à publier.".to_owned()
            } else {
                web::explain(&e, WHAT)
            };
            input.errors.insert("publier", message);
            render(&app, &agent, &headers, input, StatusCode::CONFLICT).await
        }
    }
}
