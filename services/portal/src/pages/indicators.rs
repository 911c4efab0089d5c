//! Indicateurs: the supervisors' dashboard. Live tiles of the queue (SSE),
//! then every indicator of the period with its figure, its definition, a
//! chart drawn here as SVG with the same values in a table beside it, the
//! change against a reference period, the items behind it (down to the
//! fiche) and CSV exports. Supervisors and admins only; the indicators role
//! checks again.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use guichet_platform::auth::Role;
use guichet_platform::calendar::{from_paris, to_paris};
use guichet_proto::convert::timestamp;
use guichet_proto::indicators::v1 as pb;
use serde::Deserialize;

use super::{Layout, Section, respond};
use crate::session::Session;
use crate::views;
use crate::web::{self, Agent, App};

pub fn may_read(agent: &Session) -> bool {
    agent.has(Role::Supervisor) || agent.has(Role::Admin)
}

/// The dashboard's query string (French names, as in the form).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Params {
    /// First and last day, YYYY-MM-DD (Paris), both included.
    du: Option<String>,
    au: Option<String>,
    /// heure, jour, semaine, mois; empty: the whole period.
    granularite: Option<String>,
    /// A dimension (`channel`…); empty: none.
    decoupe: Option<String>,
    /// A reference period to compare with.
    ref_du: Option<String>,
    ref_au: Option<String>,
    /// Drill-down: the cut value and the page.
    valeur: Option<String>,
    page: Option<String>,
    /// Export: one indicator's items.
    indicateur: Option<String>,
}

const CUTS: [(&str, &str); 12] = [
    ("", "Aucune"),
    ("channel", "Canal"),
    ("procedure", "Démarche"),
    ("version", "Version de la démarche"),
    ("department", "Service municipal"),
    ("queue", "File"),
    ("site", "Site"),
    ("service", "Service de l'accueil"),
    ("desk", "Guichet"),
    ("appointment_type", "Type de rendez-vous"),
    ("age", "Ancienneté"),
    ("agent", "Agent"),
];

const GRANULARITIES: [(&str, &str); 5] = [
    ("", "Toute la période"),
    ("heure", "Par heure"),
    ("jour", "Par jour"),
    ("semaine", "Par semaine"),
    ("mois", "Par mois"),
];

const FAMILIES: [(&str, &str); 6] = [
    ("requests", "Demandes, tous canaux"),
    ("telephone", "Téléphone"),
    ("counter", "Accueil physique"),
    ("appointments", "Rendez-vous"),
    ("signatures", "Signatures électroniques"),
    ("dossiers", "Dossiers"),
];

/// A refusal of the page's own parameters (400, with the reason).
struct Bad(String);

fn day(s: &Option<String>, what: &str) -> Result<Option<NaiveDate>, Bad> {
    match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| Bad(format!("{what} « {s} » n'est pas une date (AAAA-MM-JJ)."))),
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    from_paris(d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The period the parameters name (default: the last 30 days, today
/// included).
struct Period {
    from: NaiveDate,
    to: NaiveDate,
}

impl Period {
    fn of(
        du: &Option<String>,
        au: &Option<String>,
        today: NaiveDate,
        what: &str,
    ) -> Result<Period, Bad> {
        let to = day(au, &format!("La date de fin {what}"))?.unwrap_or(today);
        let from = day(du, &format!("La date de début {what}"))?.unwrap_or(to - Duration::days(29));
        if to < from {
            return Err(Bad(format!(
                "La date de fin {what} précède sa date de début."
            )));
        }
        if (to - from).num_days() > 3 * 366 {
            return Err(Bad("Choisissez une période de trois ans au plus.".into()));
        }
        Ok(Period { from, to })
    }

    fn pb(&self) -> pb::Period {
        pb::Period {
            start: Some(timestamp(midnight(self.from))),
            end: Some(timestamp(midnight(self.to + Duration::days(1)))),
        }
    }

    fn text(&self) -> String {
        if self.from == self.to {
            format!("le {}", self.from.format("%d/%m/%Y"))
        } else {
            format!(
                "du {} au {}",
                self.from.format("%d/%m/%Y"),
                self.to.format("%d/%m/%Y")
            )
        }
    }
}

fn granularity(s: &Option<String>) -> Result<pb::Granularity, Bad> {
    Ok(match s.as_deref().unwrap_or("") {
        "" => pb::Granularity::Unspecified,
        "heure" => pb::Granularity::Hour,
        "jour" => pb::Granularity::Day,
        "semaine" => pb::Granularity::Week,
        "mois" => pb::Granularity::Month,
        other => {
            return Err(Bad(format!(
                "« {other} » n'est pas une granularité (heure, jour, semaine, mois)."
            )));
        }
    })
}

fn cut(s: &Option<String>) -> Result<String, Bad> {
    let c = s.clone().unwrap_or_default();
    if CUTS.iter().any(|(k, _)| *k == c) {
        Ok(c)
    } else {
        Err(Bad(format!("« {c} » n'est pas une découpe proposée.")))
    }
}

/// "12 s", "10 min", "1 h 05", "3 j 4 h"; negative: "−2 min" (early).
pub fn seconds_text(s: f64) -> String {
    let sign = if s < 0.0 { "\u{2212}" } else { "" };
    let s = s.abs().round() as i64;
    let text = if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        if s % 60 == 0 {
            format!("{} min", s / 60)
        } else {
            format!("{} min {:02} s", s / 60, s % 60)
        }
    } else {
        views::duration(Duration::seconds(s))
    };
    format!("{sign}{text}")
}

fn decimal(v: f64, digits: usize) -> String {
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    s.replace('.', ",")
}

/// A figure in words, by unit.
pub fn value_text(unit: &str, v: f64) -> String {
    match unit {
        "seconds" => seconds_text(v),
        "days" => seconds_text(v * 86_400.0),
        "ratio" => format!("{} %", decimal(v * 100.0, 1)),
        "per_hour" => format!("{} par heure", decimal(v, 2)),
        _ => decimal(v, 1),
    }
}

fn cut_label(dimension: &str, value: &str) -> String {
    if value.is_empty() {
        return "—".into();
    }
    match (dimension, value) {
        ("channel", "telephony") => "Téléphone".into(),
        ("channel", "email") => "Courriel".into(),
        ("channel", "counter") => "Accueil".into(),
        ("channel", "scan") => "Courrier".into(),
        ("channel", "web") => "Saisie au guichet".into(),
        _ => value.to_owned(),
    }
}

fn bucket_text(g: pb::Granularity, t: DateTime<Utc>) -> String {
    let l = to_paris(t);
    match g {
        pb::Granularity::Hour => l.format("%d/%m %Hh").to_string(),
        pb::Granularity::Month => l.format("%m/%Y").to_string(),
        pb::Granularity::Week => format!("sem. du {}", l.format("%d/%m")),
        _ => l.format("%d/%m/%Y").to_string(),
    }
}

pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub tip: String,
}

pub struct Chart {
    pub id: String,
    pub title: String,
    pub desc: String,
    pub bars: Vec<Bar>,
}

pub struct Row {
    pub label: String,
    pub value: String,
    pub count: u64,
    pub change: String,
    pub drill: String,
}

pub struct FigureView {
    pub key: String,
    pub label: String,
    pub value: String,
    pub count: u64,
    pub empty: bool,
    pub definition: String,
    pub clock: &'static str,
    pub change: String,
    pub drill: String,
    pub chart: Option<Chart>,
    pub rows: Vec<Row>,
    pub row_header: String,
}

pub struct FamilyView {
    pub title: &'static str,
    pub id: &'static str,
    pub figures: Vec<FigureView>,
}

pub struct Tiles {
    pub channels: Vec<(String, u32, String)>,
    pub agents: Vec<(String, u32)>,
    pub as_of: String,
}

#[derive(askama::Template)]
#[template(path = "indicators.html")]
struct Dashboard {
    layout: Layout,
    period: String,
    du: String,
    au: String,
    ref_du: String,
    ref_au: String,
    granularite: String,
    decoupe: String,
    cuts: Vec<(&'static str, &'static str)>,
    granularities: &'static [(&'static str, &'static str)],
    families: Section<Vec<FamilyView>>,
    tiles: Section<Tiles>,
    empty: bool,
    export: String,
    reference: String,
}

#[derive(askama::Template)]
#[template(path = "indicators_live.html")]
struct LiveTiles {
    tiles: Section<Tiles>,
}

#[derive(askama::Template)]
#[template(path = "indicators_items.html")]
struct ItemsPage {
    layout: Layout,
    label: String,
    definition: String,
    period: String,
    cut: String,
    items: Section<Vec<ItemView>>,
    total: u64,
    next: String,
    export: String,
    back: String,
}

pub struct ItemView {
    pub kind: &'static str,
    pub at: String,
    pub value: String,
    pub counted: &'static str,
    pub dossier: Option<(String, String)>,
}

fn forbidden() -> Response {
    web::error_page(
        StatusCode::FORBIDDEN,
        "Accès réservé",
        "Les indicateurs sont réservés aux responsables et aux administrateurs.",
    )
}

fn bad(b: Bad) -> Response {
    web::error_page(StatusCode::BAD_REQUEST, "Paramètres incorrects", &b.0)
}

/// A refusal from the indicators role on parameters: 400 with its reason.
fn refused(e: &tonic::Status) -> Option<Response> {
    (e.code() == tonic::Code::InvalidArgument).then(|| {
        web::error_page(
            StatusCode::BAD_REQUEST,
            "Paramètres incorrects",
            &format!("Les indicateurs refusent cette demande : {}", e.message()),
        )
    })
}

fn query_string(p: &Params, extra: &[(&str, &str)]) -> String {
    let mut parts: Vec<(String, String)> = [
        ("du", &p.du),
        ("au", &p.au),
        ("granularite", &p.granularite),
        ("decoupe", &p.decoupe),
        ("ref_du", &p.ref_du),
        ("ref_au", &p.ref_au),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        v.as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| (k.to_owned(), v.clone()))
    })
    .collect();
    for (k, v) in extra {
        parts.retain(|(pk, _)| pk != k);
        parts.push(((*k).to_owned(), (*v).to_owned()));
    }
    parts
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn tiles(app: &App, agent: &Session) -> Section<Tiles> {
    let mut c = app.clients.indicators.clone();
    let res = c
        .get_queue_now(app.clients.request(agent, pb::GetQueueNowRequest {}))
        .await
        .map(|r| {
            let q = r.into_inner();
            Tiles {
                channels: q
                    .channels
                    .iter()
                    .map(|c| {
                        (
                            cut_label("channel", &c.channel),
                            c.waiting,
                            seconds_text(f64::from(c.oldest_wait_seconds)),
                        )
                    })
                    .collect(),
                agents: q
                    .agents
                    .iter()
                    .map(|a| (presence_word(&a.presence).to_owned(), a.agents))
                    .collect(),
                as_of: views::ts(&q.as_of).map(views::when).unwrap_or_default(),
            }
        });
    Section::from(res, "Le service des indicateurs")
}

fn presence_word(p: &str) -> &str {
    match p {
        "available" => "Disponibles",
        "busy" => "Occupés",
        "break" | "away" => "En pause",
        "offline" => "Hors ligne",
        other => other,
    }
}

/// GET /indicateurs
pub async fn page(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    if !may_read(&agent) {
        return forbidden();
    }
    let today = to_paris(app.now()).date();
    let (period, reference, g, c) = match (|| {
        let period = Period::of(&p.du, &p.au, today, "de la période")?;
        let reference = match (&p.ref_du, &p.ref_au) {
            (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => Some(Period::of(
                &p.ref_du,
                &p.ref_au,
                today,
                "de la période de référence",
            )?),
            _ => None,
        };
        let c = cut(&p.decoupe)?;
        // A cut shows one row per value over the whole period.
        let g = if c.is_empty() {
            granularity(&p.granularite)?
        } else {
            pb::Granularity::Unspecified
        };
        Ok::<_, Bad>((period, reference, g, c))
    })() {
        Ok(v) => v,
        Err(b) => return bad(b),
    };
    let mut client = app.clients.indicators.clone();
    let defs = client
        .list_definitions(app.clients.request(&agent, pb::ListDefinitionsRequest {}))
        .await
        .map(|r| r.into_inner().definitions);
    let figures = client
        .get_figures(app.clients.request(
            &agent,
            pb::GetFiguresRequest {
                period: Some(period.pb()),
                granularity: g as i32,
                cut: c.clone(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner());
    if let Err(e) = &figures
        && let Some(r) = refused(e)
    {
        return r;
    }
    let comparison = match &reference {
        Some(r) => client
            .compare_periods(app.clients.request(
                &agent,
                pb::ComparePeriodsRequest {
                    reference: Some(r.pb()),
                    compared: Some(period.pb()),
                    cut: c.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner().comparisons)
            .unwrap_or_default(),
        None => vec![],
    };
    let mut empty = false;
    // Only the cuts some indicator takes (the agent cut where the town enables it).
    let cuts: Vec<(&'static str, &'static str)> = CUTS
        .iter()
        .copied()
        .filter(|(k, _)| {
            k.is_empty()
                || defs
                    .as_ref()
                    .map(|d| d.iter().any(|d| d.cuts.iter().any(|x| x == k)))
                    .unwrap_or(true)
        })
        .collect();
    let families = match (defs, figures) {
        (Ok(defs), Ok(f)) => {
            empty = f.empty;
            Section::done(build(&defs, &f.figures, &comparison, g, &c, &p))
        }
        (Err(e), _) | (_, Err(e)) => Section::from(Err(e), "Le service des indicateurs"),
    };
    let tiles = tiles(&app, &agent).await;
    let layout = Layout::new(&app, &agent, "indicateurs", &headers);
    respond(
        &app,
        &Dashboard {
            layout,
            period: period.text(),
            du: period.from.format("%Y-%m-%d").to_string(),
            au: period.to.format("%Y-%m-%d").to_string(),
            ref_du: reference
                .as_ref()
                .map(|r| r.from.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            ref_au: reference
                .as_ref()
                .map(|r| r.to.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            granularite: p.granularite.clone().unwrap_or_default(),
            decoupe: c,
            cuts,
            granularities: &GRANULARITIES,
            families,
            tiles,
            empty,
            export: format!("/indicateurs/export.csv?{}", query_string(&p, &[])),
            reference: reference.map(|r| r.text()).unwrap_or_default(),
        },
    )
}

fn build(
    defs: &[pb::Definition],
    figures: &[pb::Figure],
    comparison: &[pb::Comparison],
    g: pb::Granularity,
    c: &str,
    p: &Params,
) -> Vec<FamilyView> {
    let mut out = Vec::new();
    for (family, title) in FAMILIES {
        let mut views = Vec::new();
        for (n, d) in defs.iter().filter(|d| d.family == family).enumerate() {
            let mine: Vec<&pb::Figure> = figures.iter().filter(|f| f.indicator == d.key).collect();
            if mine.is_empty() {
                continue; // cannot take this cut
            }
            let change_of = |cut_value: &str| {
                comparison
                    .iter()
                    .find(|x| x.indicator == d.key && x.cut_value == cut_value)
                    .map(|x| x.text.clone())
                    .unwrap_or_default()
            };
            let drill_of = |cut_value: &str| {
                let mut extra = vec![];
                if !c.is_empty() {
                    extra.push(("valeur", cut_value));
                }
                format!(
                    "/indicateurs/{}/elements?{}",
                    d.key,
                    query_string(p, &extra)
                )
            };
            let total_count: u64 = mine.iter().map(|f| f.count).sum();
            let (value, rows, row_header) = if !c.is_empty() {
                let rows = mine
                    .iter()
                    .map(|f| Row {
                        label: cut_label(c, &f.cut_value),
                        value: if f.empty {
                            "aucune donnée".into()
                        } else {
                            value_text(&d.unit, f.value)
                        },
                        count: f.count,
                        change: change_of(&f.cut_value),
                        drill: drill_of(&f.cut_value),
                    })
                    .collect();
                let header = CUTS
                    .iter()
                    .find(|(k, _)| *k == c)
                    .map(|(_, l)| *l)
                    .unwrap_or("Valeur");
                (String::new(), rows, header.to_owned())
            } else if mine.len() == 1 {
                let f = mine[0];
                let v = if f.empty {
                    "aucune donnée".into()
                } else {
                    value_text(&d.unit, f.value)
                };
                (v, vec![], String::new())
            } else {
                let rows = mine
                    .iter()
                    .map(|f| Row {
                        label: views::ts(&f.bucket_start)
                            .map(|t| bucket_text(g, t))
                            .unwrap_or_default(),
                        value: if f.empty {
                            "—".into()
                        } else {
                            value_text(&d.unit, f.value)
                        },
                        count: f.count,
                        change: String::new(),
                        drill: String::new(),
                    })
                    .collect();
                (String::new(), rows, "Période".to_owned())
            };
            let chart = (c.is_empty() && mine.len() > 1)
                .then(|| chart(&format!("{family}-{n}"), &d.label, &d.unit, &mine, g));
            views.push(FigureView {
                key: d.key.clone(),
                label: d.label.clone(),
                value,
                count: total_count,
                empty: mine.iter().all(|f| f.empty),
                definition: d.definition.clone(),
                clock: if d.clock == "business_hours" {
                    "heures d'ouverture"
                } else {
                    "temps réel"
                },
                change: if c.is_empty() {
                    change_of("")
                } else {
                    String::new()
                },
                drill: drill_of(""),
                chart,
                rows,
                row_header,
            });
        }
        if !views.is_empty() {
            out.push(FamilyView {
                title,
                id: family,
                figures: views,
            });
        }
    }
    out
}

/// Bars of a series, scaled to its largest value, in a 600 × 120 box.
fn chart(id: &str, label: &str, unit: &str, figures: &[&pb::Figure], g: pb::Granularity) -> Chart {
    let max = figures.iter().map(|f| f.value.abs()).fold(0.0, f64::max);
    let n = figures.len().max(1) as u32;
    let slot = 600 / n;
    let w = (slot * 7 / 10).max(1);
    let bars = figures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let h = if max > 0.0 {
                ((f.value.abs() / max) * 110.0).round() as u32
            } else {
                0
            };
            let when = views::ts(&f.bucket_start)
                .map(|t| bucket_text(g, t))
                .unwrap_or_default();
            Bar {
                x: i as u32 * slot + (slot - w) / 2,
                y: 120 - h,
                w,
                h,
                tip: format!(
                    "{when} : {}",
                    if f.empty {
                        "aucune donnée".into()
                    } else {
                        value_text(unit, f.value)
                    }
                ),
            }
        })
        .collect();
    Chart {
        id: format!("graphique-{id}"),
        title: label.to_owned(),
        desc: format!(
            "Histogramme de {} valeurs ; le tableau qui suit donne chacune d'elles.",
            figures.len()
        ),
        bars,
    }
}

/// GET /indicateurs/direct: the live tiles, refreshed on queue events.
pub async fn live(State(app): State<App>, agent: Agent) -> Response {
    if !may_read(&agent) {
        return forbidden();
    }
    web::render(&LiveTiles {
        tiles: tiles(&app, &agent).await,
    })
}

/// GET /indicateurs/{key}/elements: the items behind a figure.
pub async fn items(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(p): Query<Params>,
) -> Response {
    if !may_read(&agent) {
        return forbidden();
    }
    let today = to_paris(app.now()).date();
    let (period, c) = match Period::of(&p.du, &p.au, today, "de la période")
        .and_then(|pe| Ok((pe, cut(&p.decoupe)?)))
    {
        Ok(v) => v,
        Err(b) => return bad(b),
    };
    let mut client = app.clients.indicators.clone();
    let defs = client
        .list_definitions(app.clients.request(&agent, pb::ListDefinitionsRequest {}))
        .await
        .map(|r| r.into_inner().definitions)
        .unwrap_or_default();
    let Some(def) = defs.iter().find(|d| d.key == key).cloned() else {
        return web::error_page(
            StatusCode::NOT_FOUND,
            "Indicateur inconnu",
            "Cet indicateur n'existe pas.",
        );
    };
    let value = p.valeur.clone().unwrap_or_default();
    let res = client
        .drill_down(app.clients.request(
            &agent,
            pb::DrillDownRequest {
                indicator: key.clone(),
                period: Some(period.pb()),
                cut: c.clone(),
                cut_value: value.clone(),
                page_size: 100,
                page_token: p.page.clone().unwrap_or_default(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner());
    if let Err(e) = &res
        && let Some(r) = refused(e)
    {
        return r;
    }
    let (total, next) = res
        .as_ref()
        .map(|r| (r.total, r.next_page_token.clone()))
        .unwrap_or_default();
    let unit = def.unit.clone();
    let items = Section::from(
        res.map(|r| {
            r.items
                .into_iter()
                .map(|i| ItemView {
                    kind: match i.kind.as_str() {
                        "request" => "Demande",
                        "call" => "Appel",
                        "visit" => "Visite",
                        "appointment" => "Rendez-vous",
                        "signature" => "Signature",
                        "dossier" => "Dossier",
                        "day" => "Journée",
                        _ => "Relevé",
                    },
                    at: views::ts(&i.at).map(views::when).unwrap_or_default(),
                    // Counts and ratios have no value per item (ratios say
                    // whether the item counted).
                    value: if unit == "count" || unit == "ratio" {
                        String::new()
                    } else {
                        value_text(&unit, i.value)
                    },
                    counted: if def.unit == "ratio" {
                        if i.counted { "oui" } else { "non" }
                    } else {
                        ""
                    },
                    dossier: (!i.dossier_id.is_empty()).then(|| {
                        (
                            i.dossier_id.clone(),
                            if i.dossier_reference.is_empty() {
                                "Voir le dossier".into()
                            } else {
                                i.dossier_reference.clone()
                            },
                        )
                    }),
                })
                .collect()
        }),
        "Le service des indicateurs",
    );
    let layout = Layout::new(&app, &agent, "indicateurs", &headers);
    respond(
        &app,
        &ItemsPage {
            layout,
            label: def.label,
            definition: def.definition,
            period: period.text(),
            cut: if c.is_empty() {
                String::new()
            } else {
                format!(
                    "{} : {}",
                    CUTS.iter()
                        .find(|(k, _)| *k == c)
                        .map(|(_, l)| *l)
                        .unwrap_or(""),
                    cut_label(&c, &value)
                )
            },
            items,
            total,
            next: if next.is_empty() {
                String::new()
            } else {
                format!(
                    "/indicateurs/{key}/elements?{}",
                    query_string(&p, &[("page", &next)])
                )
            },
            export: format!(
                "/indicateurs/export.csv?{}",
                query_string(&p, &[("indicateur", &key), ("valeur", &value)])
            ),
            back: format!("/indicateurs?{}", query_string(&p, &[])),
        },
    )
}

/// GET /indicateurs/export.csv: the figures (or one indicator's items) as CSV.
pub async fn export(State(app): State<App>, agent: Agent, Query(p): Query<Params>) -> Response {
    if !may_read(&agent) {
        return forbidden();
    }
    let today = to_paris(app.now()).date();
    let parsed = (|| {
        let period = Period::of(&p.du, &p.au, today, "de la période")?;
        let c = cut(&p.decoupe)?;
        let g = if c.is_empty() {
            granularity(&p.granularite)?
        } else {
            pb::Granularity::Unspecified
        };
        Ok::<_, Bad>((period, c, g))
    })();
    let (period, c, g) = match parsed {
        Ok(v) => v,
        Err(b) => return bad(b),
    };
    let table = match p.indicateur.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => pb::export_csv_request::Table::Items(pb::DrillDownRequest {
            indicator: key.to_owned(),
            period: Some(period.pb()),
            cut: c,
            cut_value: p.valeur.clone().unwrap_or_default(),
            ..Default::default()
        }),
        None => pb::export_csv_request::Table::Figures(pb::GetFiguresRequest {
            period: Some(period.pb()),
            granularity: g as i32,
            cut: c,
            ..Default::default()
        }),
    };
    let mut client = app.clients.indicators.clone();
    match client
        .export_csv(
            app.clients
                .request(&agent, pb::ExportCsvRequest { table: Some(table) }),
        )
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{}\"", r.filename),
                    ),
                ],
                r.csv,
            )
                .into_response()
        }
        Err(e) => refused(&e).unwrap_or_else(|| {
            web::error_page(
                StatusCode::BAD_GATEWAY,
                "Export impossible",
                &web::explain(&e, "Le service des indicateurs"),
            )
        }),
    }
}
