//! The process studio: process owners see the town's procedures (a state
//! diagram drawn here as SVG, with the same content in tables), make a
//! draft of a new version through forms or as TOML text (the dossier role
//! validates it with the catalog's own checks and says what changes),
//! walk a test dossier through it, publish it with a reason, and move open
//! dossiers to the new version. Every call goes to the dossier role's
//! `ProcessStudioService` with the owner's identity; the role checks again.

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use guichet_platform::auth::Role;
use guichet_proto::dossier::v1 as dpb;

use super::{Layout, respond_with};
use crate::session::Session;
use crate::views;
use crate::web::{self, Agent, App};

/// Process owners and admins work in the studio (`has` lets admins in).
pub fn may_edit(agent: &Session) -> bool {
    agent.has(Role::ProcessOwner)
}

/// Refuse who may not work in the studio, and a form without its CSRF
/// token.
fn refused(agent: &Session, csrf: Option<&str>) -> Option<Response> {
    if !may_edit(agent) {
        return Some(owners_only());
    }
    csrf.and_then(|c| web::check_csrf(agent, c).err())
}

/// The page when a role refused to read what it shows: not found, or the
/// role is unavailable.
fn unreadable(e: &tonic::Status, title: &str, what: &str) -> Response {
    let status = if e.code() == tonic::Code::NotFound {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    web::error_page(status, title, &web::explain(e, what))
}

fn owners_only() -> Response {
    web::forbidden(
        "Seuls les responsables des procédures et les administrateurs ouvrent le studio des procédures.",
    )
}

const WHAT: &str = "Le catalogue des procédures";

/// French names of the catalog's domains.
pub fn domain_fr(d: &str) -> &str {
    match d {
        "etat-civil" => "État civil",
        "titres-identite" => "Titres d'identité",
        "petite-enfance" => "Petite enfance",
        "scolaire" => "Scolaire",
        "periscolaire" => "Périscolaire",
        "urbanisme" => "Urbanisme",
        "voirie" => "Voirie",
        "elections" => "Élections",
        "citoyennete" => "Citoyenneté",
        "funeraire" => "Funéraire",
        "domaine-public" => "Domaine public",
        "social" => "Social",
        "affaires-generales" => "Affaires générales",
        other => other,
    }
}

/// The guards a transition may need, with their French words.
pub const GUARDS: &[(&str, &str)] = &[
    ("checklist_complete", "pièces complètes"),
    ("citizen_identified", "usager identifié"),
    ("appointment_booked", "rendez-vous réservé"),
    ("signature_completed", "signature recueillie"),
    ("note_present", "note présente au dossier"),
];

/// The roles a transition may be for, with their French words.
pub const ROLES: &[(&str, &str)] = &[
    ("agent", "agent"),
    ("supervisor", "superviseur"),
    ("admin", "administrateur"),
    ("service", "système"),
];

fn guard_fr(g: &str) -> String {
    GUARDS
        .iter()
        .find(|(k, _)| *k == g)
        .map(|(_, v)| (*v).to_owned())
        .unwrap_or_else(|| g.to_owned())
}

fn role_fr(r: &str) -> String {
    ROLES
        .iter()
        .find(|(k, _)| *k == r)
        .map(|(_, v)| (*v).to_owned())
        .unwrap_or_else(|| r.to_owned())
}

fn sla_fr(s: &dpb::ProcessState) -> String {
    match (s.sla_days, s.sla_working_hours) {
        (d, _) if d > 0 => format!("{d} jour(s)"),
        (_, h) if h > 0 => format!("{h} heure(s) ouvrée(s)"),
        _ => "—".into(),
    }
}

fn timer_fr(p: &dpb::Process, t: &dpb::ProcessTimer) -> String {
    let title = |id: &str| {
        p.states
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.title.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    let after = if t.after_days > 0 {
        format!("{} jour(s)", t.after_days)
    } else {
        format!("{} jour(s) ouvré(s)", t.after_working_days)
    };
    if t.kind == "transition" {
        format!(
            "Après {after} en « {} » : passage à « {} » (motif : {})",
            title(&t.state),
            title(&t.to_state),
            t.reason
        )
    } else {
        format!(
            "Après {after} en « {} » : rappel « {} » à l'usager",
            title(&t.state),
            t.template
        )
    }
}

// ---------------------------------------------------------------- diagram

/// A state of the diagram.
pub struct Node {
    pub x: i32,
    pub y: i32,
    pub lines: Vec<(i32, String)>,
    pub terminal: bool,
    pub initial: bool,
}

/// A transition of the diagram.
pub struct Edge {
    pub d: String,
    pub tip: String,
    pub timer: bool,
}

/// A procedure's states and transitions, laid out in layers from the
/// initial state (each state one layer below the first that leads to it).
pub struct Diagram {
    pub width: i32,
    pub height: i32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub title: String,
    pub desc: String,
}

pub const NODE_W: i32 = 190;
pub const NODE_H: i32 = 52;
const GAP_X: i32 = 36;
const GAP_Y: i32 = 64;
const MARGIN: i32 = 28;

/// `s` cut into at most two lines of about `width` characters.
fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = vec![String::new()];
    for word in s.split_whitespace() {
        let cur = lines.last_mut().expect("one line");
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            if lines.len() == 2 {
                let last = lines.last_mut().expect("two lines");
                last.push('…');
                return lines;
            }
            lines.push(word.to_owned());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines
}

pub fn diagram(p: &dpb::Process) -> Diagram {
    let index: HashMap<&str, usize> = p
        .states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut arrows: Vec<(usize, usize, String, bool)> = Vec::new();
    for t in &p.transitions {
        if let (Some(&a), Some(&b)) = (
            index.get(t.from_state.as_str()),
            index.get(t.to_state.as_str()),
        ) {
            arrows.push((a, b, t.label.clone(), false));
        }
    }
    for t in p.timers.iter().filter(|t| t.kind == "transition") {
        if let (Some(&a), Some(&b)) = (index.get(t.state.as_str()), index.get(t.to_state.as_str()))
        {
            arrows.push((a, b, "minuterie".into(), true));
        }
    }
    let mut depth = vec![usize::MAX; p.states.len()];
    if let Some(&start) = index.get(p.initial_state.as_str()) {
        depth[start] = 0;
        let mut todo = VecDeque::from([start]);
        while let Some(s) = todo.pop_front() {
            for &(a, b, _, _) in &arrows {
                if a == s && depth[b] == usize::MAX {
                    depth[b] = depth[s] + 1;
                    todo.push_back(b);
                }
            }
        }
    }
    let deepest = depth.iter().filter(|d| **d != usize::MAX).max().copied();
    let last = deepest.map(|d| d + 1).unwrap_or(0);
    for d in depth.iter_mut() {
        if *d == usize::MAX {
            *d = last;
        }
    }
    let layers = depth.iter().max().map(|d| d + 1).unwrap_or(0);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, d) in depth.iter().enumerate() {
        rows[*d].push(i);
    }
    rows.retain(|r| !r.is_empty());
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1) as i32;
    let width = 2 * MARGIN + widest * NODE_W + (widest - 1) * GAP_X + 80;
    let height = 2 * MARGIN + rows.len() as i32 * NODE_H + (rows.len() as i32 - 1).max(0) * GAP_Y;
    let mut pos = vec![(0, 0); p.states.len()];
    for (r, row) in rows.iter().enumerate() {
        let row_w = row.len() as i32 * NODE_W + (row.len() as i32 - 1) * GAP_X;
        let x0 = MARGIN + (widest * NODE_W + (widest - 1) * GAP_X - row_w) / 2;
        for (k, &i) in row.iter().enumerate() {
            pos[i] = (
                x0 + k as i32 * (NODE_W + GAP_X),
                MARGIN + r as i32 * (NODE_H + GAP_Y),
            );
        }
    }
    let nodes = p
        .states
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (x, y) = pos[i];
            let lines = wrap(&s.title, 24);
            let n = lines.len() as i32;
            Node {
                x,
                y,
                lines: lines
                    .into_iter()
                    .enumerate()
                    .map(|(k, l)| (y + NODE_H / 2 + 5 - (n - 1) * 8 + k as i32 * 16, l))
                    .collect(),
                terminal: s.terminal,
                initial: s.id == p.initial_state,
            }
        })
        .collect();
    let title_of = |i: usize| p.states[i].title.clone();
    let mut seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut edges: Vec<Edge> = Vec::new();
    for (a, b, label, timer) in arrows {
        if a == b {
            continue;
        }
        if let Some(&k) = seen.get(&(a, b)) {
            edges[k].tip.push_str(&format!(" ; {label}"));
            continue;
        }
        let (ax, ay) = pos[a];
        let (bx, by) = pos[b];
        let d = if by > ay {
            let (sx, sy) = (ax + NODE_W / 2, ay + NODE_H);
            let (ex, ey) = (bx + NODE_W / 2, by - 2);
            format!(
                "M {sx} {sy} C {sx} {} {ex} {} {ex} {ey}",
                sy + GAP_Y / 2,
                ey - GAP_Y / 2
            )
        } else {
            // Back or sideways: around the right of the boxes.
            let bend = 50 + 10 * (edges.len() as i32 % 4);
            let (sx, sy) = (ax + NODE_W, ay + NODE_H / 2 - 6);
            let (ex, ey) = (bx + NODE_W + 2, by + NODE_H / 2 + 6);
            format!(
                "M {sx} {sy} C {} {sy} {} {ey} {ex} {ey}",
                sx + bend,
                ex + bend
            )
        };
        let tip = if label.is_empty() {
            format!("{} → {}", title_of(a), title_of(b))
        } else {
            format!("{} → {} : {label}", title_of(a), title_of(b))
        };
        seen.insert((a, b), edges.len());
        edges.push(Edge { d, tip, timer });
    }
    Diagram {
        width,
        height,
        nodes,
        title: format!(
            "Diagramme des états de « {} », version {}",
            p.title, p.version
        ),
        desc: format!(
            "{} états et {} transitions. Le tableau qui suit le diagramme en donne le même contenu.",
            p.states.len(),
            edges.len()
        ),
        edges,
    }
}

// ---------------------------------------------------------------- tables

/// A state, for the tables.
pub struct StateRow {
    pub id: String,
    pub title: String,
    pub guidance: String,
    pub checklist: Vec<String>,
    pub sla: String,
    pub actions: Vec<String>,
    pub terminal: bool,
    pub initial: bool,
    pub open: u32,
    /// Form values.
    pub sla_days: String,
    pub sla_hours: String,
    pub checked: Vec<String>,
}

/// A transition, for the tables.
pub struct TransitionRow {
    pub index: usize,
    pub from: String,
    pub to: String,
    pub label: String,
    pub roles: String,
    pub guards: String,
    pub reason: bool,
}

/// A procedure laid out for reading.
pub struct Shown {
    pub process: dpb::Process,
    pub domain: String,
    pub diagram: Diagram,
    pub states: Vec<StateRow>,
    pub transitions: Vec<TransitionRow>,
    pub timers: Vec<(usize, String)>,
    pub documents: Vec<dpb::ProcessDocument>,
}

fn shown(p: dpb::Process, open: &BTreeMap<String, u32>) -> Shown {
    let title = |id: &str| {
        p.states
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.title.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    let doc = |id: &str| {
        p.documents
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.title.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    let states = p
        .states
        .iter()
        .map(|s| StateRow {
            id: s.id.clone(),
            title: s.title.clone(),
            guidance: s.guidance.clone(),
            checklist: s.checklist.iter().map(|c| doc(c)).collect(),
            sla: sla_fr(s),
            actions: s.actions.iter().map(|a| a.description.clone()).collect(),
            terminal: s.terminal,
            initial: s.id == p.initial_state,
            open: open.get(&s.id).copied().unwrap_or(0),
            sla_days: if s.sla_days > 0 {
                s.sla_days.to_string()
            } else {
                String::new()
            },
            sla_hours: if s.sla_working_hours > 0 {
                s.sla_working_hours.to_string()
            } else {
                String::new()
            },
            checked: s.checklist.clone(),
        })
        .collect();
    let transitions = p
        .transitions
        .iter()
        .enumerate()
        .map(|(index, t)| TransitionRow {
            index,
            from: title(&t.from_state),
            to: title(&t.to_state),
            label: t.label.clone(),
            roles: t
                .roles
                .iter()
                .map(|r| role_fr(r))
                .collect::<Vec<_>>()
                .join(", "),
            guards: if t.guards.is_empty() {
                "—".into()
            } else {
                t.guards
                    .iter()
                    .map(|g| guard_fr(g))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            reason: t.requires_reason,
        })
        .collect();
    let timers = p
        .timers
        .iter()
        .enumerate()
        .map(|(i, t)| (i, timer_fr(&p, t)))
        .collect();
    Shown {
        domain: domain_fr(&p.domain).to_owned(),
        diagram: diagram(&p),
        states,
        transitions,
        timers,
        documents: p.documents.clone(),
        process: p,
    }
}

impl StateRow {
    /// Whether the state asks for document `id`.
    pub fn has(&self, id: &str) -> bool {
        self.checked.iter().any(|c| c == id)
    }
}

// ---------------------------------------------------------------- catalog

pub struct CatalogRow {
    pub id: String,
    pub title: String,
    pub version: u32,
    pub versions: usize,
    pub draft: bool,
}

#[derive(askama::Template)]
#[template(path = "studio.html")]
struct CatalogPage {
    layout: Layout,
    domains: Vec<(String, Vec<CatalogRow>)>,
    publications: Vec<PublicationRow>,
    error: Option<String>,
    imported: Vec<ImportRow>,
}

pub struct PublicationRow {
    pub process: String,
    pub process_id: String,
    pub version: u32,
    pub who: String,
    pub when: String,
    pub reason: String,
    pub written_to: String,
}

pub struct ImportRow {
    pub name: String,
    pub outcome: String,
    pub problems: Vec<String>,
}

fn publication_row(titles: &BTreeMap<String, String>, p: dpb::Publication) -> PublicationRow {
    PublicationRow {
        process: titles
            .get(&p.process_id)
            .cloned()
            .unwrap_or(p.process_id.clone()),
        process_id: p.process_id,
        version: p.version,
        who: p.published_by,
        when: views::ts(&p.publish_time)
            .map(views::when)
            .unwrap_or_default(),
        reason: p.reason,
        written_to: if p.written_to == "database" {
            "base de données".into()
        } else {
            p.written_to
        },
    }
}

async fn catalog_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    error: Option<String>,
    imported: Vec<ImportRow>,
    status: StatusCode,
) -> Response {
    let mut d = app.clients.dossier.clone();
    let mut s = app.clients.studio.clone();
    let listed = d
        .list_processes(
            app.clients
                .request(agent, dpb::ListProcessesRequest::default()),
        )
        .await;
    let processes = match listed {
        Ok(r) => r.into_inner().processes,
        Err(e) => {
            return web::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Procédures",
                &web::explain(&e, WHAT),
            );
        }
    };
    let drafts: Vec<String> = s
        .list_drafts(
            app.clients
                .request(agent, dpb::ListDraftsRequest::default()),
        )
        .await
        .map(|r| {
            r.into_inner()
                .drafts
                .into_iter()
                .map(|d| d.process_id)
                .collect()
        })
        .unwrap_or_default();
    let titles: BTreeMap<String, String> = processes
        .iter()
        .map(|p| (p.id.clone(), p.title.clone()))
        .collect();
    let publications = s
        .list_publications(
            app.clients
                .request(agent, dpb::ListPublicationsRequest::default()),
        )
        .await
        .map(|r| r.into_inner().publications)
        .unwrap_or_default()
        .into_iter()
        .take(20)
        .map(|p| publication_row(&titles, p))
        .collect();
    let mut by_domain: BTreeMap<String, Vec<CatalogRow>> = BTreeMap::new();
    for p in processes {
        by_domain
            .entry(domain_fr(&p.domain).to_owned())
            .or_default()
            .push(CatalogRow {
                draft: drafts.contains(&p.id),
                id: p.id,
                title: p.title,
                version: p.version,
                versions: p.versions.len(),
            });
    }
    for rows in by_domain.values_mut() {
        rows.sort_by(|a, b| a.title.cmp(&b.title));
    }
    let page = CatalogPage {
        layout: Layout::new(app, agent, "studio", headers),
        domains: by_domain.into_iter().collect(),
        publications,
        error,
        imported,
    };
    respond_with(app, &page, status)
}

pub async fn catalog(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    catalog_page(&app, &agent, &headers, None, vec![], StatusCode::OK).await
}

/// Every published version as a zip of `<id>.v<version>.toml` files.
pub async fn export(State(app): State<App>, agent: Agent) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    let mut s = app.clients.studio.clone();
    let files = match s
        .export_catalog(app.clients.request(&agent, dpb::ExportCatalogRequest {}))
        .await
    {
        Ok(r) => r.into_inner().files,
        Err(e) => {
            return web::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Export du catalogue",
                &web::explain(&e, WHAT),
            );
        }
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let written: zip::result::ZipResult<()> = (|| {
        let mut z = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for f in &files {
            z.start_file(format!("processes/{}", f.name), options)?;
            std::io::Write::write_all(&mut z, f.text.as_bytes())?;
        }
        z.finish()?;
        Ok(())
    })();
    if let Err(e) = written {
        tracing::error!(error = %e, "cannot build the catalog export");
        return web::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Export du catalogue",
            "L'archive n'a pas pu être construite.",
        );
    }
    (
        [
            (header::CONTENT_TYPE, "application/zip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"procedures.zip\"",
            ),
        ],
        out.into_inner(),
    )
        .into_response()
}

/// Files from the browser: `.toml` files, or zip archives of them.
fn import_files(name: &str, bytes: &[u8]) -> Result<Vec<dpb::CatalogFile>, String> {
    if name.to_lowercase().ends_with(".zip") {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|_| format!("« {name} » n'est pas une archive zip lisible."))?;
        let mut files = Vec::new();
        for i in 0..z.len() {
            let mut f = z
                .by_index(i)
                .map_err(|_| format!("« {name} » : un fichier de l'archive est illisible."))?;
            let inner = f.name().map(|n| n.into_owned()).map_err(|_| {
                format!("« {name} » : un nom de fichier de l'archive est illisible.")
            })?;
            if f.is_dir() || !inner.ends_with(".toml") {
                continue;
            }
            if f.size() > 512 * 1024 {
                return Err(format!("« {inner} » dépasse 512 Kio."));
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text)
                .map_err(|_| format!("« {inner} » n'est pas un texte UTF-8."))?;
            let base = inner.rsplit('/').next().unwrap_or_default().to_owned();
            files.push(dpb::CatalogFile { name: base, text });
        }
        Ok(files)
    } else if name.ends_with(".toml") {
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("« {name} » n'est pas un texte UTF-8."))?;
        Ok(vec![dpb::CatalogFile {
            name: name.to_owned(),
            text,
        }])
    } else {
        Err(format!(
            "« {name} » n'est ni un fichier .toml ni une archive .zip."
        ))
    }
}

pub async fn import(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    let mut csrf = String::new();
    let mut reason = String::new();
    let mut files = Vec::new();
    let mut problem = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => match field.name() {
                Some("csrf") => csrf = field.text().await.unwrap_or_default(),
                Some("motif") => reason = field.text().await.unwrap_or_default(),
                Some("fichiers") => {
                    let name = field.file_name().unwrap_or_default().to_owned();
                    match field.bytes().await {
                        Ok(b) if name.is_empty() && b.is_empty() => {}
                        Ok(b) => match import_files(&name, &b) {
                            Ok(f) => files.extend(f),
                            Err(e) => problem = Some(e),
                        },
                        Err(_) => {
                            problem = Some("L'envoi des fichiers a échoué : réessayez.".into())
                        }
                    }
                }
                _ => {}
            },
            Ok(None) => break,
            Err(_) => {
                problem = Some("L'envoi des fichiers a échoué : réessayez.".into());
                break;
            }
        }
    }
    if let Err(r) = web::check_csrf(&agent, &csrf) {
        return r;
    }
    if problem.is_none() && files.is_empty() {
        problem = Some("Choisissez au moins un fichier .toml ou une archive .zip.".into());
    }
    if problem.is_none() && reason.trim().is_empty() {
        problem =
            Some("Dites pourquoi ces versions sont importées (le motif est conservé).".into());
    }
    if let Some(p) = problem {
        return catalog_page(
            &app,
            &agent,
            &headers,
            Some(p),
            vec![],
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let mut s = app.clients.studio.clone();
    match s
        .import_catalog(app.clients.request(
            &agent,
            dpb::ImportCatalogRequest {
                files,
                reason: reason.trim().to_owned(),
            },
        ))
        .await
    {
        Ok(r) => {
            let out = r.into_inner().files;
            let refused = out.iter().any(|f| f.outcome == "refused");
            let rows = out
                .into_iter()
                .map(|f| ImportRow {
                    outcome: match f.outcome.as_str() {
                        "published" => format!("publiée : {} v{}", f.process_id, f.version),
                        "unchanged" => format!(
                            "déjà publiée à l'identique : {} v{}",
                            f.process_id, f.version
                        ),
                        "not_published" => "non publiée : un autre fichier est refusé".into(),
                        _ => "refusée".into(),
                    },
                    problems: f.problems.iter().map(problem_fr).collect(),
                    name: f.name,
                })
                .collect();
            let (error, status) = if refused {
                (
                    Some("Import refusé : aucun fichier n'a été publié. Corrigez les fichiers signalés puis recommencez.".into()),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
            } else {
                (None, StatusCode::OK)
            };
            catalog_page(&app, &agent, &headers, error, rows, status).await
        }
        Err(e) => {
            catalog_page(
                &app,
                &agent,
                &headers,
                Some(web::explain(&e, WHAT)),
                vec![],
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

fn problem_fr(p: &dpb::Problem) -> String {
    let at = if p.line > 0 {
        format!("ligne {}, ", p.line)
    } else {
        String::new()
    };
    format!("{at}champ {} : {}", p.field, p.message)
}

// ---------------------------------------------------------------- process

#[derive(askama::Template)]
#[template(path = "studio_process.html")]
struct ProcessPage {
    layout: Layout,
    shown: Shown,
    latest: u32,
    usage: Vec<UsageRow>,
    publications: Vec<PublicationRow>,
    has_draft: bool,
    origin: String,
    /// The message templates the procedure sends.
    messages: Vec<String>,
}

/// A version, its open dossiers, and their count by state (titles).
type UsageRow = (u32, u32, Vec<(String, u32)>);

#[derive(serde::Deserialize, Default)]
pub struct VersionQuery {
    #[serde(default)]
    version: u32,
}

pub async fn process(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    let mut d = app.clients.dossier.clone();
    let mut s = app.clients.studio.clone();
    let process = match d
        .get_process(app.clients.request(
            &agent,
            dpb::GetProcessRequest {
                id: id.clone(),
                version: q.version,
            },
        ))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            return unreadable(&e, "Procédure", WHAT);
        }
    };
    let usage = s
        .get_process_usage(app.clients.request(
            &agent,
            dpb::GetProcessUsageRequest {
                process_id: id.clone(),
            },
        ))
        .await
        .map(|r| r.into_inner().versions)
        .unwrap_or_default();
    let title = |st: &str| {
        process
            .states
            .iter()
            .find(|x| x.id == st)
            .map(|x| x.title.clone())
            .unwrap_or_else(|| st.to_owned())
    };
    let open: BTreeMap<String, u32> = usage
        .iter()
        .find(|u| u.version == process.version)
        .map(|u| {
            u.states
                .iter()
                .map(|c| (c.state.clone(), c.open_dossiers))
                .collect()
        })
        .unwrap_or_default();
    let usage_rows = usage
        .iter()
        .map(|u| {
            (
                u.version,
                u.open_dossiers,
                u.states
                    .iter()
                    .map(|c| {
                        let t = if u.version == process.version {
                            title(&c.state)
                        } else {
                            c.state.clone()
                        };
                        (t, c.open_dossiers)
                    })
                    .collect(),
            )
        })
        .collect();
    let has_draft = s
        .get_draft(app.clients.request(
            &agent,
            dpb::GetDraftRequest {
                process_id: id.clone(),
            },
        ))
        .await
        .is_ok();
    let origin = s
        .get_process_source(app.clients.request(
            &agent,
            dpb::GetProcessSourceRequest {
                process_id: id.clone(),
                version: process.version,
            },
        ))
        .await
        .map(|r| r.into_inner().origin)
        .unwrap_or_default();
    let titles = BTreeMap::from([(id.clone(), process.title.clone())]);
    let publications = s
        .list_publications(app.clients.request(
            &agent,
            dpb::ListPublicationsRequest {
                process_id: id.clone(),
            },
        ))
        .await
        .map(|r| r.into_inner().publications)
        .unwrap_or_default()
        .into_iter()
        .map(|p| publication_row(&titles, p))
        .collect();
    let latest = process
        .versions
        .iter()
        .max()
        .copied()
        .unwrap_or(process.version);
    let messages = templates_of(&process);
    let page = ProcessPage {
        layout: Layout::new(&app, &agent, "studio", &headers),
        messages,
        shown: shown(process, &open),
        latest,
        usage: usage_rows,
        publications,
        has_draft,
        origin: if origin == "database" {
            "publiée depuis le studio (base de données)".into()
        } else {
            origin
        },
    };
    respond_with(&app, &page, StatusCode::OK)
}

// ---------------------------------------------------------------- draft

#[derive(askama::Template)]
#[template(path = "studio_draft.html")]
struct DraftPage {
    layout: Layout,
    process_id: String,
    draft: dpb::Draft,
    shown: Option<Shown>,
    problems: Vec<ProblemRow>,
    error: Option<String>,
    error_field: String,
    guards: &'static [(&'static str, &'static str)],
    roles: &'static [(&'static str, &'static str)],
    /// The text to show in the editor (what was sent, when it was refused).
    text: String,
}

pub struct ProblemRow {
    pub field: String,
    pub line: u32,
    pub message: String,
    /// The lines around the problem, numbered, the faulty one marked.
    pub excerpt: Vec<(u32, String, bool)>,
}

fn problem_rows(text: &str, problems: &[dpb::Problem]) -> Vec<ProblemRow> {
    problems
        .iter()
        .map(|p| ProblemRow {
            field: p.field.clone(),
            line: p.line,
            message: p.message.clone(),
            excerpt: views::excerpt(text, p.line),
        })
        .collect()
}

async fn draft_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    id: &str,
    error: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let mut s = app.clients.studio.clone();
    let draft = match s
        .get_draft(app.clients.request(
            agent,
            dpb::GetDraftRequest {
                process_id: id.to_owned(),
            },
        ))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) if e.code() == tonic::Code::NotFound => {
            return web::redirect_with(
                &format!("/studio/procedure/{id}"),
                "Cette procédure n'a pas de brouillon : créez-en un.",
                app.config.secure_cookies,
            );
        }
        Err(e) => {
            return web::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Brouillon",
                &web::explain(&e, WHAT),
            );
        }
    };
    let problems = problem_rows(&draft.text, &draft.problems);
    let shown = draft.process.clone().map(|p| shown(p, &BTreeMap::new()));
    let (error, error_field) = match error {
        Some((m, f)) => (Some(m), f),
        None => (None, String::new()),
    };
    let page = DraftPage {
        layout: Layout::new(app, agent, "studio", headers),
        process_id: id.to_owned(),
        text: draft.text.clone(),
        draft,
        shown,
        problems,
        error,
        error_field,
        guards: GUARDS,
        roles: ROLES,
    };
    respond_with(app, &page, status)
}

pub async fn draft(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    draft_page(&app, &agent, &headers, &id, None, StatusCode::OK).await
}

#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

pub async fn create_draft(
    State(app): State<App>,
    agent: Agent,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = refused(&agent, Some(&f.csrf)) {
        return r;
    }
    let mut s = app.clients.studio.clone();
    let secure = app.config.secure_cookies;
    let to = format!("/studio/procedure/{id}/brouillon");
    match s
        .create_draft(app.clients.request(
            &agent,
            dpb::CreateDraftRequest {
                process_id: id.clone(),
                from_version: 0,
            },
        ))
        .await
    {
        Ok(d) => web::redirect_with(
            &to,
            &format!("Brouillon de la version {} créé.", d.into_inner().version),
            secure,
        ),
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            web::redirect_with(&to, "Un brouillon existe déjà : le voici.", secure)
        }
        Err(e) => web::redirect_with(
            &format!("/studio/procedure/{id}"),
            &web::explain(&e, WHAT),
            secure,
        ),
    }
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

fn fields(f: &[(String, String)], name: &str) -> Vec<String> {
    f.iter()
        .filter(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

/// A whole number of a form, or why not (French).
fn number(f: &[(String, String)], name: &str, what: &str) -> Result<u32, (String, String)> {
    let v = field(f, name).trim();
    if v.is_empty() {
        return Ok(0);
    }
    v.parse::<u32>().map_err(|_| {
        (
            format!("{what} : donnez un nombre entier positif."),
            name.to_owned(),
        )
    })
}

/// The form's change, as the studio's edit.
fn edit_of(f: &[(String, String)]) -> Result<dpb::edit_draft_request::Edit, (String, String)> {
    use dpb::edit_draft_request::Edit as E;
    Ok(match field(f, "op") {
        "etat" => E::PutState(dpb::StateEdit {
            id: field(f, "id").trim().to_owned(),
            title: field(f, "titre").to_owned(),
            guidance: field(f, "consignes").to_owned(),
            terminal: field(f, "final") == "1",
            checklist: fields(f, "pieces"),
            sla_days: number(f, "delai_jours", "Délai en jours")?,
            sla_working_hours: number(f, "delai_heures", "Délai en heures ouvrées")?,
        }),
        "retirer_etat" => E::RemoveState(field(f, "id").to_owned()),
        "transition" => E::AddTransition(dpb::TransitionEdit {
            from_state: field(f, "de").trim().to_owned(),
            to_state: field(f, "vers").trim().to_owned(),
            label: field(f, "libelle").to_owned(),
            roles: fields(f, "roles"),
            guards: fields(f, "conditions"),
            requires_reason: field(f, "motif_requis") == "1",
        }),
        "retirer_transition" => E::RemoveTransition(number(f, "index", "Transition")?),
        "minuterie" => E::AddTimer(dpb::ProcessTimer {
            state: field(f, "etat").to_owned(),
            after_days: number(f, "apres_jours", "Après (jours)")?,
            after_working_days: number(f, "apres_jours_ouvres", "Après (jours ouvrés)")?,
            kind: field(f, "nature").to_owned(),
            to_state: field(f, "vers").to_owned(),
            reason: field(f, "motif").to_owned(),
            template: field(f, "modele").to_owned(),
        }),
        "retirer_minuterie" => E::RemoveTimer(number(f, "index", "Minuterie")?),
        "action" => E::AddAction(dpb::ActionEdit {
            state: field(f, "etat").to_owned(),
            kind: field(f, "nature").to_owned(),
            appointment_type: field(f, "type_rendez_vous").to_owned(),
            template: field(f, "modele").to_owned(),
            document: field(f, "document").to_owned(),
        }),
        "retirer_action" => E::RemoveAction(format!("{}/{}", field(f, "etat"), field(f, "index"))),
        "piece" => E::PutDocument(dpb::DocumentEdit {
            id: field(f, "id").trim().to_owned(),
            title: field(f, "titre").to_owned(),
            required: field(f, "obligatoire") == "1",
        }),
        "general" => E::SetFields(dpb::ProcessFieldsEdit {
            title: field(f, "titre").to_owned(),
            description: field(f, "description").to_owned(),
            retention_days: number(f, "conservation", "Durée de conservation")?,
        }),
        other => {
            return Err((format!("Modification inconnue « {other} »."), "op".into()));
        }
    })
}

/// A refused call's reason for the owner, and the field it names.
fn refusal(e: &tonic::Status) -> (String, String) {
    let field = tonic_types::StatusExt::get_details_bad_request(e)
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default();
    let message = match e.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
            format!("Modification refusée : {}", e.message())
        }
        _ => web::explain(e, WHAT),
    };
    (message, field)
}

pub async fn edit(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refused(&agent, Some(field(&f, "csrf"))) {
        return r;
    }
    let edit = match edit_of(&f) {
        Ok(e) => e,
        Err(err) => {
            return draft_page(
                &app,
                &agent,
                &headers,
                &id,
                Some(err),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    let mut s = app.clients.studio.clone();
    match s
        .edit_draft(app.clients.request(
            &agent,
            dpb::EditDraftRequest {
                process_id: id.clone(),
                edit: Some(edit),
            },
        ))
        .await
    {
        Ok(d) => {
            let d = d.into_inner();
            let message = if d.problems.is_empty() {
                "Modification enregistrée. Le brouillon est valide.".to_owned()
            } else {
                "Modification enregistrée. Le brouillon a un problème à corriger avant publication : voyez ci-dessous.".to_owned()
            };
            web::redirect_with(
                &format!("/studio/procedure/{id}/brouillon"),
                &message,
                app.config.secure_cookies,
            )
        }
        Err(e) => {
            draft_page(
                &app,
                &agent,
                &headers,
                &id,
                Some(refusal(&e)),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

#[derive(serde::Deserialize)]
pub struct TextForm {
    csrf: String,
    texte: String,
}

pub async fn save_text(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<TextForm>,
) -> Response {
    if let Some(r) = refused(&agent, Some(&f.csrf)) {
        return r;
    }
    let mut s = app.clients.studio.clone();
    match s
        .update_draft_text(app.clients.request(
            &agent,
            dpb::UpdateDraftTextRequest {
                process_id: id.clone(),
                text: f.texte,
            },
        ))
        .await
    {
        Ok(d) => {
            let d = d.into_inner();
            if d.problems.is_empty() {
                web::redirect_with(
                    &format!("/studio/procedure/{id}/brouillon"),
                    "Texte enregistré. Le brouillon est valide.",
                    app.config.secure_cookies,
                )
            } else {
                // Kept, but not valid: the page says where, with the text.
                draft_page(
                    &app,
                    &agent,
                    &headers,
                    &id,
                    None,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
        }
        Err(e) => {
            draft_page(
                &app,
                &agent,
                &headers,
                &id,
                Some(refusal(&e)),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

pub async fn delete_draft(
    State(app): State<App>,
    agent: Agent,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = refused(&agent, Some(&f.csrf)) {
        return r;
    }
    let mut s = app.clients.studio.clone();
    let message = match s
        .delete_draft(app.clients.request(
            &agent,
            dpb::DeleteDraftRequest {
                process_id: id.clone(),
            },
        ))
        .await
    {
        Ok(_) => "Brouillon supprimé.".to_owned(),
        Err(e) => web::explain(&e, WHAT),
    };
    web::redirect_with(
        &format!("/studio/procedure/{id}"),
        &message,
        app.config.secure_cookies,
    )
}

#[derive(serde::Deserialize)]
pub struct PublishForm {
    csrf: String,
    #[serde(default)]
    motif: String,
}

pub async fn publish(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<PublishForm>,
) -> Response {
    if let Some(r) = refused(&agent, Some(&f.csrf)) {
        return r;
    }
    if f.motif.trim().is_empty() {
        return draft_page(
            &app,
            &agent,
            &headers,
            &id,
            Some((
                "Dites pourquoi cette version est publiée : le motif est conservé avec elle."
                    .into(),
                "motif".into(),
            )),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let mut s = app.clients.studio.clone();
    match s
        .publish_draft(app.clients.request(
            &agent,
            dpb::PublishDraftRequest {
                process_id: id.clone(),
                reason: f.motif.trim().to_owned(),
            },
        ))
        .await
    {
        Ok(p) => {
            let p = p.into_inner();
            let place = if p.written_to == "database" {
                String::new()
            } else {
                format!(" Fichier écrit : {}.", p.written_to)
            };
            web::redirect_with(
                &format!(
                    "/studio/procedure/{id}/migration?de={}&vers={}",
                    p.version.saturating_sub(1).max(1),
                    p.version
                ),
                &format!(
                    "Version {} publiée : les nouveaux dossiers la suivent.{place} Vous pouvez maintenant y faire passer les dossiers ouverts.",
                    p.version
                ),
                app.config.secure_cookies,
            )
        }
        Err(e) => {
            draft_page(
                &app,
                &agent,
                &headers,
                &id,
                Some(refusal(&e)),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

// ---------------------------------------------------------------- dry run

#[derive(askama::Template)]
#[template(path = "studio_dry_run.html")]
struct DryRunPage {
    layout: Layout,
    process_id: String,
    title: String,
    version: u32,
    run: Option<dpb::DryRunResponse>,
    error: Option<String>,
    /// The path so far, as hidden fields.
    path: Vec<String>,
    documents: Vec<(String, String, bool)>,
    facts: dpb::DryRunFacts,
    roles: &'static [(&'static str, &'static str)],
    /// The query string of the current facts, to keep them in the links.
    draft: bool,
}

pub async fn dry_run(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    let version: u32 = field(&q, "version").parse().unwrap_or(0);
    let mut path = fields(&q, "chemin");
    if !field(&q, "suivant").is_empty() {
        path.push(field(&q, "suivant").to_owned());
    }
    if field(&q, "recommencer") == "1" {
        path.clear();
    }
    let facts = dpb::DryRunFacts {
        provided_documents: fields(&q, "pieces"),
        citizen_identified: field(&q, "identifie") == "1",
        appointment_booked: field(&q, "rendez_vous") == "1",
        signature_completed: field(&q, "signature") == "1",
        note_present: field(&q, "note") == "1",
        role: field(&q, "role").to_owned(),
    };
    let mut s = app.clients.studio.clone();
    let mut d = app.clients.dossier.clone();
    // The definition tried: the draft's (0) or a published version.
    let process = if version == 0 {
        s.get_draft(app.clients.request(
            &agent,
            dpb::GetDraftRequest {
                process_id: id.clone(),
            },
        ))
        .await
        .map(|r| r.into_inner().process)
    } else {
        d.get_process(app.clients.request(
            &agent,
            dpb::GetProcessRequest {
                id: id.clone(),
                version,
            },
        ))
        .await
        .map(|r| Some(r.into_inner()))
    };
    let process = match process {
        Ok(Some(p)) => p,
        Ok(None) => {
            return web::redirect_with(
                &format!("/studio/procedure/{id}/brouillon"),
                "Le brouillon n'est pas valide : corrigez-le avant de l'essayer.",
                app.config.secure_cookies,
            );
        }
        Err(e) => {
            return unreadable(&e, "Essai", WHAT);
        }
    };
    let res = s
        .dry_run(app.clients.request(
            &agent,
            dpb::DryRunRequest {
                process_id: id.clone(),
                version,
                path: path.clone(),
                facts: Some(facts.clone()),
            },
        ))
        .await;
    let (run, error, status) = match res {
        Ok(r) => (Some(r.into_inner()), None, StatusCode::OK),
        Err(e) => (
            None,
            Some(format!("Essai impossible : {}", e.message())),
            StatusCode::BAD_REQUEST,
        ),
    };
    let documents = process
        .documents
        .iter()
        .map(|doc| {
            (
                doc.id.clone(),
                doc.title.clone(),
                facts.provided_documents.contains(&doc.id),
            )
        })
        .collect();
    let page = DryRunPage {
        layout: Layout::new(&app, &agent, "studio", &headers),
        process_id: id,
        title: process.title.clone(),
        version: process.version,
        run,
        error,
        path,
        documents,
        facts,
        roles: ROLES,
        draft: version == 0,
    };
    respond_with(&app, &page, status)
}

// ---------------------------------------------------------------- migration

#[derive(askama::Template)]
#[template(path = "studio_migration.html")]
struct MigrationPage {
    layout: Layout,
    process_id: String,
    title: String,
    versions: Vec<u32>,
    from: u32,
    to: u32,
    /// State of `from` in use, its open dossiers, the chosen target.
    rows: Vec<MappingRow>,
    targets: Vec<(String, String)>,
    plan: Vec<PlanRow>,
    applied: bool,
    error: Option<String>,
}

pub struct MappingRow {
    pub state: String,
    pub title: String,
    pub open: u32,
    pub target: String,
}

pub struct PlanRow {
    pub dossier_id: String,
    pub reference: String,
    pub from: String,
    pub to: String,
}

async fn migration_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    id: &str,
    form: &[(String, String)],
    action: Option<bool>,
) -> Response {
    let mut d = app.clients.dossier.clone();
    let mut s = app.clients.studio.clone();
    let latest = match d
        .get_process(app.clients.request(
            agent,
            dpb::GetProcessRequest {
                id: id.to_owned(),
                version: 0,
            },
        ))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            return unreadable(&e, "Migration", WHAT);
        }
    };
    let mut versions = latest.versions.clone();
    versions.sort();
    let to: u32 = field(form, "vers").parse().unwrap_or(latest.version);
    let from: u32 = field(form, "de").parse().unwrap_or_else(|_| {
        versions
            .iter()
            .rev()
            .find(|v| **v < to)
            .copied()
            .unwrap_or(to)
    });
    let get = |v: u32| dpb::GetProcessRequest {
        id: id.to_owned(),
        version: v,
    };
    let (old, new) = match (
        d.get_process(app.clients.request(agent, get(from))).await,
        d.get_process(app.clients.request(agent, get(to))).await,
    ) {
        (Ok(a), Ok(b)) => (a.into_inner(), b.into_inner()),
        (Err(e), _) | (_, Err(e)) => {
            return web::error_page(
                StatusCode::BAD_REQUEST,
                "Migration",
                &web::explain(&e, WHAT),
            );
        }
    };
    let usage = s
        .get_process_usage(app.clients.request(
            agent,
            dpb::GetProcessUsageRequest {
                process_id: id.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().versions)
        .unwrap_or_default();
    let in_use: Vec<dpb::StateCount> = usage
        .into_iter()
        .find(|u| u.version == from)
        .map(|u| u.states)
        .unwrap_or_default();
    let title_in = |p: &dpb::Process, st: &str| {
        p.states
            .iter()
            .find(|x| x.id == st)
            .map(|x| x.title.clone())
            .unwrap_or_else(|| st.to_owned())
    };
    let rows: Vec<MappingRow> = in_use
        .iter()
        .map(|c| {
            let chosen = field(form, &format!("etat:{}", c.state));
            let target = if !chosen.is_empty() {
                chosen.to_owned()
            } else if new.states.iter().any(|x| x.id == c.state) {
                c.state.clone()
            } else {
                String::new()
            };
            MappingRow {
                title: title_in(&old, &c.state),
                state: c.state.clone(),
                open: c.open_dossiers,
                target,
            }
        })
        .collect();
    let targets = new
        .states
        .iter()
        .map(|x| (x.id.clone(), x.title.clone()))
        .collect();
    let mut plan = Vec::new();
    let mut applied = false;
    let mut error = None;
    let mut status = StatusCode::OK;
    if let Some(apply) = action {
        let mapping = rows
            .iter()
            .filter(|r| !r.target.is_empty())
            .map(|r| (r.state.clone(), r.target.clone()))
            .collect();
        match d
            .migrate_dossiers(app.clients.request(
                agent,
                dpb::MigrateDossiersRequest {
                    process_id: id.to_owned(),
                    from_version: from,
                    to_version: to,
                    state_mapping: mapping,
                    dry_run: !apply,
                },
            ))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                applied = r.applied;
                plan = r
                    .dossiers
                    .into_iter()
                    .map(|m| PlanRow {
                        from: title_in(&old, &m.from_state),
                        to: title_in(&new, &m.to_state),
                        dossier_id: m.dossier_id,
                        reference: m.reference,
                    })
                    .collect();
            }
            Err(e) => {
                status = StatusCode::UNPROCESSABLE_ENTITY;
                error = Some(match e.code() {
                    tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                        format!("Migration refusée : {}", e.message())
                    }
                    _ => web::explain(&e, "Le service des dossiers"),
                });
            }
        }
    }
    let page = MigrationPage {
        layout: Layout::new(app, agent, "studio", headers),
        process_id: id.to_owned(),
        title: new.title.clone(),
        versions,
        from,
        to,
        rows,
        targets,
        plan,
        applied,
        error,
    };
    respond_with(app, &page, status)
}

pub async fn migration(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    migration_page(&app, &agent, &headers, &id, &q, None).await
}

pub async fn migrate(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refused(&agent, Some(field(&f, "csrf"))) {
        return r;
    }
    let apply = field(&f, "appliquer") == "1";
    migration_page(&app, &agent, &headers, &id, &f, Some(apply)).await
}

// ---------------------------------------------------------------- messages

use guichet_proto::notification::v1 as npb;

const MESSAGES: &str = "Le service des messages";

fn origin_fr(o: &str) -> &'static str {
    match o {
        "studio" => "rédaction de la mairie (studio)",
        "directory" => "fichier de la mairie",
        _ => "texte livré avec guichet",
    }
}

pub struct MessageRow {
    pub id: String,
    pub description: String,
    pub origin: &'static str,
    pub sms: bool,
    pub email: bool,
}

#[derive(askama::Template)]
#[template(path = "studio_messages.html")]
struct MessagesPage {
    layout: Layout,
    rows: Vec<MessageRow>,
}

pub async fn messages(State(app): State<App>, agent: Agent, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    let mut n = app.clients.notification.clone();
    let list = match n
        .list_templates(app.clients.request(&agent, npb::ListTemplatesRequest {}))
        .await
    {
        Ok(r) => r.into_inner().templates,
        Err(e) => {
            return web::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Messages",
                &web::explain(&e, MESSAGES),
            );
        }
    };
    let rows = list
        .into_iter()
        .map(|t| MessageRow {
            origin: origin_fr(&t.origin),
            sms: !t.sms.is_empty(),
            email: !t.email_body.is_empty(),
            id: t.id,
            description: t.description,
        })
        .collect();
    let page = MessagesPage {
        layout: Layout::new(&app, &agent, "studio", &headers),
        rows,
    };
    respond_with(&app, &page, StatusCode::OK)
}

#[derive(askama::Template)]
#[template(path = "studio_message.html")]
struct MessagePage {
    layout: Layout,
    id: String,
    template: npb::MessageTemplate,
    /// A template not known yet: made for a process's new message.
    new: bool,
    origin: &'static str,
    error: Option<String>,
    error_field: String,
    /// Its changes from the studio: when, who, what, why.
    history: Vec<(String, String, &'static str, String)>,
}

async fn message_page(
    app: &App,
    agent: &Agent,
    headers: &HeaderMap,
    id: &str,
    sent: Option<npb::MessageTemplate>,
    error: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let mut n = app.clients.notification.clone();
    let (template, new) = match n
        .get_template(
            app.clients
                .request(agent, npb::GetTemplateRequest { id: id.to_owned() }),
        )
        .await
    {
        Ok(r) => (r.into_inner(), false),
        Err(e) if e.code() == tonic::Code::NotFound => (
            npb::MessageTemplate {
                id: id.to_owned(),
                ..Default::default()
            },
            true,
        ),
        Err(e) => {
            return web::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Message",
                &web::explain(&e, MESSAGES),
            );
        }
    };
    // A refused form shows what was typed, not the saved wording.
    let template = match sent {
        Some(s) => npb::MessageTemplate {
            description: s.description,
            sms: s.sms,
            email_subject: s.email_subject,
            email_body: s.email_body,
            ..template
        },
        None => template,
    };
    let (error, error_field) = match error {
        Some((m, f)) => (Some(m), f),
        None => (None, String::new()),
    };
    let history = template
        .changes
        .iter()
        .map(|c| {
            (
                views::ts(&c.change_time)
                    .map(views::when)
                    .unwrap_or_default(),
                c.actor.clone(),
                if c.action == "reset" {
                    "texte d'origine rétabli"
                } else {
                    "texte modifié"
                },
                c.reason.clone(),
            )
        })
        .collect();
    let page = MessagePage {
        layout: Layout::new(app, agent, "studio", headers),
        history,
        id: id.to_owned(),
        origin: origin_fr(&template.origin),
        template,
        new,
        error,
        error_field,
    };
    respond_with(app, &page, status)
}

pub async fn message(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refused(&agent, None) {
        return r;
    }
    // The list's "new message" form names the id in its query.
    if id == "nouveau" {
        let wanted = field(&q, "id").trim().to_lowercase();
        let ok = !wanted.is_empty()
            && wanted
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return web::redirect_with(
                "/studio/messages",
                "L'identifiant d'un message s'écrit en minuscules, chiffres et tirets.",
                app.config.secure_cookies,
            );
        }
        return axum::response::Redirect::to(&format!("/studio/messages/{wanted}")).into_response();
    }
    message_page(&app, &agent, &headers, &id, None, None, StatusCode::OK).await
}

#[derive(serde::Deserialize)]
pub struct MessageForm {
    csrf: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    sms: String,
    #[serde(default)]
    objet: String,
    #[serde(default)]
    courriel: String,
    #[serde(default)]
    motif: String,
}

pub async fn save_message(
    State(app): State<App>,
    agent: Agent,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<MessageForm>,
) -> Response {
    if let Some(r) = refused(&agent, Some(&f.csrf)) {
        return r;
    }
    let sent = npb::MessageTemplate {
        description: f.description.clone(),
        sms: f.sms.clone(),
        email_subject: f.objet.clone(),
        email_body: f.courriel.clone(),
        ..Default::default()
    };
    if f.motif.trim().is_empty() {
        return message_page(
            &app,
            &agent,
            &headers,
            &id,
            Some(sent),
            Some((
                "Dites pourquoi le texte change : le motif est conservé.".into(),
                "motif".into(),
            )),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let mut n = app.clients.notification.clone();
    match n
        .update_template(app.clients.request(
            &agent,
            npb::UpdateTemplateRequest {
                id: id.clone(),
                description: f.description,
                sms: f.sms,
                email_subject: f.objet,
                email_body: f.courriel,
                reason: f.motif.trim().to_owned(),
            },
        ))
        .await
    {
        Ok(_) => web::redirect_with(
            &format!("/studio/messages/{id}"),
            "Texte enregistré : les prochains messages l'utilisent.",
            app.config.secure_cookies,
        ),
        Err(e) => {
            let (message, field) = refusal(&e);
            message_page(
                &app,
                &agent,
                &headers,
                &id,
                Some(sent),
                Some((message, field)),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

pub async fn reset_message(
    State(app): State<App>,
    agent: Agent,
    Path(id): Path<String>,
    Form(f): Form<PublishForm>,
) -> Response {
    if let Some(r) = refused(&agent, Some(&f.csrf)) {
        return r;
    }
    let mut n = app.clients.notification.clone();
    if f.motif.trim().is_empty() {
        return web::redirect_with(
            &format!("/studio/messages/{id}"),
            "Dites pourquoi le texte d'origine revient : le motif est conservé.",
            app.config.secure_cookies,
        );
    }
    let message = match n
        .reset_template(app.clients.request(
            &agent,
            npb::ResetTemplateRequest {
                id: id.clone(),
                reason: f.motif.trim().to_owned(),
            },
        ))
        .await
    {
        Ok(_) => "Texte d'origine rétabli.".to_owned(),
        Err(e) => web::explain(&e, MESSAGES),
    };
    web::redirect_with(
        &format!("/studio/messages/{id}"),
        &message,
        app.config.secure_cookies,
    )
}

/// The templates a procedure sends (its actions and reminders).
fn templates_of(p: &dpb::Process) -> Vec<String> {
    let mut out: Vec<String> = p
        .states
        .iter()
        .flat_map(|s| s.actions.iter())
        .map(|a| a.template.clone())
        .chain(p.timers.iter().map(|t| t.template.clone()))
        .filter(|t| !t.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, title: &str, terminal: bool) -> dpb::ProcessState {
        dpb::ProcessState {
            id: id.into(),
            title: title.into(),
            terminal,
            ..Default::default()
        }
    }

    fn transition(from: &str, to: &str) -> dpb::ProcessTransition {
        dpb::ProcessTransition {
            from_state: from.into(),
            to_state: to.into(),
            label: String::new(),
            roles: vec!["agent".into()],
            guards: vec![],
            requires_reason: false,
        }
    }

    #[test]
    fn the_diagram_places_each_state_below_the_first_that_leads_to_it() {
        let p = dpb::Process {
            id: "p".into(),
            version: 2,
            title: "P".into(),
            initial_state: "a".into(),
            states: vec![
                state("a", "Demande reçue", false),
                state(
                    "b",
                    "Instruction du dossier par le service compétent",
                    false,
                ),
                state("c", "Complément", false),
                state("d", "Close", true),
            ],
            transitions: vec![
                transition("a", "b"),
                transition("b", "c"),
                transition("c", "b"),
                transition("b", "d"),
            ],
            ..Default::default()
        };
        let d = diagram(&p);
        assert_eq!(d.nodes.len(), 4);
        assert!(d.nodes[0].initial && d.nodes[3].terminal);
        assert!(d.nodes[1].y > d.nodes[0].y);
        assert_eq!(
            d.nodes[2].y, d.nodes[3].y,
            "c and d are both one step after b"
        );
        // Long titles wrap on two lines at most, cut with an ellipsis.
        assert_eq!(d.nodes[1].lines.len(), 2);
        assert_eq!(d.edges.len(), 4);
        assert!(
            d.edges
                .iter()
                .any(|e| e.tip == "Complément → Instruction du dossier par le service compétent")
        );
        assert!(d.desc.starts_with("4 états et 4 transitions"));
    }
}
