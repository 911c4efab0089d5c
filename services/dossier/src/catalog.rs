//! The process catalog: `processes/*.toml`, one versioned definition each.
//!
//! A definition models a town-hall procedure as states and transitions with
//! French guidance for the agent in each state. Files are validated at load
//! and an error names the file and the definition; the catalog is immutable
//! once loaded.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;

use serde::Deserialize;

/// Domains a procedure belongs to.
pub const DOMAINS: &[&str] = &[
    "etat-civil",
    "titres-identite",
    "petite-enfance",
    "scolaire",
    "periscolaire",
    "urbanisme",
    "voirie",
    "elections",
    "citoyennete",
    "funeraire",
    "domaine-public",
    "social",
    "affaires-generales",
];

/// Channels a procedure may start from.
pub const CHANNELS: &[&str] = &["telephony", "email", "scan", "counter"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessDefinition {
    pub id: String,
    pub version: u32,
    /// French title shown to agents and citizens.
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub domain: String,
    /// Channels through which this procedure may start.
    #[serde(default)]
    pub channels: Vec<String>,
    pub initial_state: String,
    /// Closed dossiers are purged this many days after closing (0: never).
    #[serde(default)]
    pub retention_days: u32,
    /// Only agents of this group may read dossiers of this process.
    #[serde(default)]
    pub restricted_group: Option<String>,
    /// A closed dossier quoted again is reopened (else a new one is opened).
    #[serde(default)]
    pub reopen_on_reference: bool,
    /// Where a reopened dossier goes.
    #[serde(default)]
    pub reopen_state: Option<String>,
    #[serde(default)]
    pub documents: Vec<DocumentDefinition>,
    pub states: Vec<StateDefinition>,
    #[serde(default)]
    pub transitions: Vec<TransitionDefinition>,
    #[serde(default)]
    pub timers: Vec<TimerDefinition>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentDefinition {
    pub id: String,
    pub title: String,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDefinition {
    pub id: String,
    pub title: String,
    /// What the agent checks, says and asks for in this state (French).
    #[serde(default)]
    pub guidance: String,
    #[serde(default)]
    pub terminal: bool,
    /// Documents expected by the end of this state.
    #[serde(default)]
    pub checklist: Vec<String>,
    /// Target time in this state, in business hours.
    #[serde(default)]
    pub sla_working_hours: Option<u32>,
    /// Target time in this state, in calendar days.
    #[serde(default)]
    pub sla_days: Option<u32>,
    #[serde(default)]
    pub actions: Vec<ActionDefinition>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActionDefinition {
    /// `book_appointment`, `request_signature` or `send_message`.
    pub kind: String,
    #[serde(default)]
    pub appointment_type: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    /// `request_signature`: the document (an id of `[[documents]]`) to have
    /// signed; the dossier's latest PDF when unset.
    #[serde(default)]
    pub document: Option<String>,
}

impl ActionDefinition {
    /// What entering the state does, for the agent (French).
    pub fn describe(&self, def: &ProcessDefinition) -> String {
        match self.kind.as_str() {
            "send_message" => format!(
                "Envoi à l'usager du message « {} » (SMS ou courriel selon ses coordonnées)",
                self.template.as_deref().unwrap_or_default()
            ),
            "request_signature" => {
                let doc = self
                    .document
                    .as_deref()
                    .and_then(|id| def.document(id))
                    .map(|d| format!("« {} »", d.title))
                    .unwrap_or_else(|| "le dernier document PDF du dossier".into());
                format!(
                    "Demande de signature électronique de {doc} : l'usager reçoit par SMS le lien de signature et un code"
                )
            }
            "book_appointment" => format!(
                "Rendez-vous « {} » à proposer à l'usager : une tâche avec les prochains créneaux libres est ajoutée au dossier",
                self.appointment_type.as_deref().unwrap_or_default()
            ),
            other => other.to_owned(),
        }
    }
}

/// Conditions a transition may require.
pub const GUARDS: &[&str] = &[
    "checklist_complete",
    "citizen_identified",
    "appointment_booked",
    "signature_completed",
    "note_present",
];

/// What a transition's guards look at, as known of one dossier (read from
/// the database by the engine, or given by a process owner's dry run).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Ids of the document types provided.
    pub provided_documents: Vec<String>,
    /// A family name and a way to reach the citizen.
    pub citizen_identified: bool,
    pub appointment_booked: bool,
    pub signature_completed: bool,
    pub note_present: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionDefinition {
    pub from: String,
    pub to: String,
    /// The button the agent sees (French); the target state's title if empty.
    #[serde(default)]
    pub label: String,
    /// Roles allowed to fire it (`agent`, `supervisor`, `admin`, `service`).
    pub roles: Vec<String>,
    #[serde(default)]
    pub guards: Vec<String>,
    #[serde(default)]
    pub requires_reason: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerDefinition {
    /// Armed when a dossier enters this state.
    pub state: String,
    #[serde(default)]
    pub after_days: Option<u32>,
    #[serde(default)]
    pub after_working_days: Option<u32>,
    /// `transition` or `reminder`.
    pub kind: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
}

/// A validation error with the text to locate it in the file.
struct Invalid {
    reason: String,
    /// A snippet of the file (e.g. `"instruction"`) whose first line is reported.
    near: Option<String>,
}

fn invalid(reason: impl Into<String>, near: Option<&str>) -> Invalid {
    Invalid {
        reason: reason.into(),
        near: near.map(|n| format!("\"{n}\"")),
    }
}

pub(crate) fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl ProcessDefinition {
    pub fn state(&self, id: &str) -> Option<&StateDefinition> {
        self.states.iter().find(|s| s.id == id)
    }

    pub fn document(&self, id: &str) -> Option<&DocumentDefinition> {
        self.documents.iter().find(|d| d.id == id)
    }

    /// Transitions leaving `state`.
    pub fn transitions_from<'a>(
        &'a self,
        state: &'a str,
    ) -> impl Iterator<Item = &'a TransitionDefinition> + 'a {
        self.transitions.iter().filter(move |t| t.from == state)
    }

    /// Timers armed by entering `state`, with their index in `timers`.
    pub fn timers_for<'a>(
        &'a self,
        state: &'a str,
    ) -> impl Iterator<Item = (usize, &'a TimerDefinition)> + 'a {
        self.timers
            .iter()
            .enumerate()
            .filter(move |(_, t)| t.state == state)
    }

    pub fn is_terminal(&self, state: &str) -> bool {
        self.state(state).is_some_and(|s| s.terminal)
    }

    /// Titles of the required checklist documents of `state` not in
    /// `provided`.
    pub fn missing_documents(&self, state: &str, provided: &[String]) -> Vec<String> {
        let Some(state) = self.state(state) else {
            return vec![];
        };
        state
            .checklist
            .iter()
            .filter_map(|id| self.document(id))
            .filter(|doc| doc.required && !provided.contains(&doc.id))
            .map(|doc| doc.title.clone())
            .collect()
    }

    /// Guards of `t` (leaving `state`) that do not hold with `facts`, as
    /// French reasons.
    pub fn guard_failures(
        &self,
        state: &str,
        t: &TransitionDefinition,
        facts: &Facts,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        for g in &t.guards {
            match g.as_str() {
                "checklist_complete" => {
                    let missing = self.missing_documents(state, &facts.provided_documents);
                    if !missing.is_empty() {
                        failures.push(format!("Pièces manquantes : {}", missing.join(", ")));
                    }
                }
                "citizen_identified" if !facts.citizen_identified => failures
                    .push("L'usager n'est pas identifié (nom et moyen de contact requis)".into()),
                "appointment_booked" if !facts.appointment_booked => {
                    failures.push("Aucun rendez-vous n'est réservé".into())
                }
                "signature_completed" if !facts.signature_completed => {
                    failures.push("La signature n'est pas encore recueillie".into())
                }
                "note_present" if !facts.note_present => {
                    failures.push("Une note est requise sur le dossier".into())
                }
                _ => {}
            }
        }
        failures
    }

    fn validate(&self) -> Result<(), Invalid> {
        if !is_slug(&self.id) {
            return Err(invalid(
                format!(
                    "id `{}` must be lower-case ASCII letters, digits and '-'",
                    self.id
                ),
                Some(&self.id),
            ));
        }
        if self.version == 0 {
            return Err(invalid("version must be at least 1", None));
        }
        if self.title.trim().is_empty() {
            return Err(invalid("title must not be empty", None));
        }
        if !DOMAINS.contains(&self.domain.as_str()) {
            return Err(invalid(
                format!(
                    "domain `{}` is not one of {}",
                    self.domain,
                    DOMAINS.join(", ")
                ),
                Some(&self.domain),
            ));
        }
        for c in &self.channels {
            if !CHANNELS.contains(&c.as_str()) {
                return Err(invalid(
                    format!("channel `{c}` is not one of {}", CHANNELS.join(", ")),
                    Some(c),
                ));
            }
        }
        let mut docs = HashSet::new();
        for d in &self.documents {
            if !is_slug(&d.id) || !docs.insert(d.id.as_str()) {
                return Err(invalid(
                    format!("document `{}` is declared twice or is not a valid id", d.id),
                    Some(&d.id),
                ));
            }
        }
        let mut seen = HashSet::new();
        for s in &self.states {
            if !is_slug(&s.id) {
                return Err(invalid(
                    format!("state id `{}` is not valid", s.id),
                    Some(&s.id),
                ));
            }
            if !seen.insert(s.id.as_str()) {
                return Err(invalid(
                    format!("state `{}` is declared twice", s.id),
                    Some(&s.id),
                ));
            }
            for c in &s.checklist {
                if !docs.contains(c.as_str()) {
                    return Err(invalid(
                        format!("state `{}` checklist names undeclared document `{c}`", s.id),
                        Some(c),
                    ));
                }
            }
            if s.sla_days.is_some() && s.sla_working_hours.is_some() {
                return Err(invalid(
                    format!("state `{}` sets both sla_days and sla_working_hours", s.id),
                    Some(&s.id),
                ));
            }
            for a in &s.actions {
                let ok = match a.kind.as_str() {
                    "book_appointment" => a.appointment_type.as_deref().is_some_and(is_slug),
                    "request_signature" | "send_message" => {
                        a.template.as_deref().is_some_and(is_slug)
                    }
                    _ => false,
                };
                if let Some(doc) = &a.document
                    && (a.kind != "request_signature" || !docs.contains(doc.as_str()))
                {
                    return Err(invalid(
                        format!(
                            "state `{}` action `{}` names document `{doc}`, which is not a declared document of a request_signature",
                            s.id, a.kind
                        ),
                        Some(doc),
                    ));
                }
                if !ok {
                    return Err(invalid(
                        format!(
                            "state `{}` action `{}` is unknown or lacks its appointment_type/template",
                            s.id, a.kind
                        ),
                        Some(&a.kind),
                    ));
                }
            }
        }
        if !seen.contains(self.initial_state.as_str()) {
            return Err(invalid(
                format!(
                    "initial_state `{}` is not a declared state",
                    self.initial_state
                ),
                Some(&self.initial_state),
            ));
        }
        if !self.states.iter().any(|s| s.terminal) {
            return Err(invalid(
                "no terminal state: dossiers could never close",
                None,
            ));
        }
        for t in &self.transitions {
            for end in [&t.from, &t.to] {
                if !seen.contains(end.as_str()) {
                    return Err(invalid(
                        format!(
                            "transition {} → {} names unknown state `{end}`",
                            t.from, t.to
                        ),
                        Some(end),
                    ));
                }
            }
            if t.roles.is_empty() {
                return Err(invalid(
                    format!("transition {} → {} has no roles", t.from, t.to),
                    Some(&t.to),
                ));
            }
            for r in &t.roles {
                if r.parse::<guichet_platform::auth::Role>().is_err() {
                    return Err(invalid(
                        format!("transition {} → {} names unknown role `{r}`", t.from, t.to),
                        Some(r),
                    ));
                }
            }
            for g in &t.guards {
                if !GUARDS.contains(&g.as_str()) {
                    return Err(invalid(
                        format!(
                            "transition {} → {} names unknown guard `{g}` (known: {})",
                            t.from,
                            t.to,
                            GUARDS.join(", ")
                        ),
                        Some(g),
                    ));
                }
            }
        }
        for t in &self.timers {
            if !seen.contains(t.state.as_str()) {
                return Err(invalid(
                    format!("timer names unknown state `{}`", t.state),
                    Some(&t.state),
                ));
            }
            match (t.after_days, t.after_working_days) {
                (Some(d), None) | (None, Some(d)) if d > 0 => {}
                _ => {
                    return Err(invalid(
                        format!(
                            "timer on `{}` needs exactly one of after_days / after_working_days (> 0)",
                            t.state
                        ),
                        Some(&t.state),
                    ));
                }
            }
            match t.kind.as_str() {
                "transition" => {
                    let to = t.to.as_deref().unwrap_or_default();
                    if !seen.contains(to) {
                        return Err(invalid(
                            format!("timer on `{}` goes to unknown state `{to}`", t.state),
                            Some(&t.state),
                        ));
                    }
                    if t.reason.as_deref().unwrap_or_default().trim().is_empty() {
                        return Err(invalid(
                            format!("timer on `{}` needs a reason (French)", t.state),
                            Some(&t.state),
                        ));
                    }
                }
                "reminder" => {
                    if !t.template.as_deref().is_some_and(is_slug) {
                        return Err(invalid(
                            format!("reminder on `{}` needs a template", t.state),
                            Some(&t.state),
                        ));
                    }
                }
                other => {
                    return Err(invalid(
                        format!("timer kind `{other}` is not transition or reminder"),
                        Some(other),
                    ));
                }
            }
        }
        if self.reopen_on_reference {
            match self.reopen_state.as_deref() {
                Some(s) if seen.contains(s) && !self.is_terminal(s) => {}
                other => {
                    return Err(invalid(
                        format!(
                            "reopen_on_reference needs reopen_state naming a non-terminal state (got {other:?})"
                        ),
                        other,
                    ));
                }
            }
        }
        if let Some(g) = &self.restricted_group
            && !is_slug(g)
        {
            return Err(invalid(
                format!("restricted_group `{g}` is not valid"),
                Some(g),
            ));
        }
        // Every state reachable from the initial state (transitions and timers).
        let mut reached = HashSet::from([self.initial_state.as_str()]);
        let mut todo = VecDeque::from([self.initial_state.as_str()]);
        while let Some(s) = todo.pop_front() {
            let nexts = self
                .transitions_from(s)
                .map(|t| t.to.as_str())
                .chain(self.timers_for(s).filter_map(|(_, t)| t.to.as_deref()));
            for n in nexts {
                if reached.insert(n) {
                    todo.push_back(n);
                }
            }
        }
        for s in &self.states {
            if !reached.contains(s.id.as_str()) {
                return Err(invalid(
                    format!(
                        "state `{}` is unreachable from `{}`",
                        s.id, self.initial_state
                    ),
                    Some(&s.id),
                ));
            }
            let way_out = self.transitions_from(&s.id).next().is_some()
                || self.timers_for(&s.id).any(|(_, t)| t.kind == "transition");
            if !s.terminal && !way_out {
                return Err(invalid(
                    format!("state `{}` is not terminal and has no way out", s.id),
                    Some(&s.id),
                ));
            }
        }
        Ok(())
    }
}

/// What is wrong with a definition's text, placed in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `toml` for a syntax error, else the field's path
    /// (`transitions[2].to`, `states[0].actions[1].kind`, `version`…).
    pub field: String,
    /// 1-based; 0 when it cannot be placed.
    pub line: u32,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if self.line > 0 {
            write!(f, " (line {})", self.line)?;
        }
        Ok(())
    }
}

/// The field a line of a definition sets: the array of tables it is in
/// (with the index of each) and its key.
fn field_at(text: &str, line: usize) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut table = String::new();
    let mut state_index: Option<usize> = None;
    let mut action_index = 0usize;
    let mut key = String::new();
    for (i, l) in text.lines().enumerate().take(line) {
        let t = l.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let name = name.trim();
            let n = counts.entry(name.to_owned()).or_default();
            match name {
                "states" => {
                    state_index = Some(*n);
                    action_index = 0;
                    table = format!("states[{n}]");
                }
                "states.actions" => {
                    table = format!(
                        "states[{}].actions[{action_index}]",
                        state_index.unwrap_or(0)
                    );
                    action_index += 1;
                }
                other => table = format!("{other}[{n}]"),
            }
            *n += 1;
            key.clear();
        } else if i + 1 == line
            && let Some((k, _)) = t.split_once('=')
        {
            key = k.trim().to_owned();
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "process".into(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// Parse and validate a definition's text, with the same checks as at
/// load: the first problem, placed at its line and field.
pub fn check_text(text: &str) -> Result<ProcessDefinition, Problem> {
    let def: ProcessDefinition = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() as u32 + 1)
            .unwrap_or(0);
        Problem {
            field: if line > 0 {
                field_at(text, line as usize)
            } else {
                "toml".into()
            },
            line,
            message: e.message().trim().to_owned(),
        }
    })?;
    def.validate().map_err(|inv| {
        let line = inv
            .near
            .as_deref()
            .and_then(|n| {
                text.lines()
                    .position(|l| l.contains(n) && !l.trim_start().starts_with('#'))
                    .map(|i| i + 1)
            })
            .unwrap_or(0);
        Problem {
            field: if line > 0 {
                field_at(text, line)
            } else {
                "process".into()
            },
            line: line as u32,
            message: format!("process `{}` v{}: {}", def.id, def.version, inv.reason),
        }
    })?;
    Ok(def)
}

/// Parse and validate one definition file's text.
pub fn parse_definition(file: &Path, text: &str) -> Result<ProcessDefinition, CatalogError> {
    check_text(text).map_err(|p| CatalogError {
        file: file.display().to_string(),
        reason: p.to_string(),
    })
}

/// Every loaded definition, by id then version.
#[derive(Debug, Default)]
pub struct Catalog {
    processes: BTreeMap<String, BTreeMap<u32, ProcessDefinition>>,
    /// Hash of each version's file text: a published version never changes.
    fingerprints: BTreeMap<(String, u32), (u64, String)>,
    /// Each version's text, as published.
    texts: BTreeMap<(String, u32), String>,
}

fn fingerprint(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

include!(concat!(env!("OUT_DIR"), "/shipped.rs"));

/// The running catalog, replaced as a whole by a successful reload.
#[derive(Debug, Clone)]
pub struct CatalogHandle {
    /// The directory it is reloaded from; `None`: the shipped processes.
    dir: Option<std::path::PathBuf>,
    current: std::sync::Arc<std::sync::RwLock<std::sync::Arc<Catalog>>>,
    /// Fingerprint of the database versions the running catalog holds: with
    /// the shipped processes (which cannot change), an unchanged set needs
    /// no reload.
    applied: std::sync::Arc<std::sync::Mutex<u64>>,
}

fn published_fingerprint(published: &[(String, u32, String)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    published.hash(&mut h);
    h.finish()
}

/// Where the versions published in the database are said to come from.
pub const DATABASE: &str = "database";

impl CatalogHandle {
    /// Load `dir`, or the shipped processes when `dir` is empty.
    pub fn load(dir: &Path) -> Result<CatalogHandle, CatalogError> {
        let dir = (!dir.as_os_str().is_empty()).then(|| dir.to_owned());
        let catalog = Catalog::from_texts(base_texts(dir.as_deref())?)?;
        Ok(CatalogHandle {
            dir,
            current: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(catalog))),
            applied: std::sync::Arc::new(std::sync::Mutex::new(published_fingerprint(&[]))),
        })
    }

    /// Where the catalog comes from, for messages.
    pub fn source(&self) -> String {
        match &self.dir {
            Some(d) => d.display().to_string(),
            None => "the shipped processes".into(),
        }
    }

    /// The directory of the deployment's process files, if it has one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn current(&self) -> std::sync::Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read the files (the directory, or the shipped processes) and add
    /// the versions `published` in the database, as `(process, version,
    /// text)`. The new catalog replaces the running one only if every text
    /// is valid and no published version was edited or removed (dossiers
    /// stay on their version); otherwise the running catalog stays and the
    /// error says why. Returns whether anything changed.
    pub fn reload_with(&self, published: &[(String, u32, String)]) -> Result<bool, CatalogError> {
        let fp = published_fingerprint(published);
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if self.dir.is_none() && *applied == fp {
            return Ok(false);
        }
        let mut texts = base_texts(self.dir.as_deref())?;
        texts.extend(published.iter().map(|(id, version, text)| {
            (
                std::path::PathBuf::from(format!("{DATABASE}:{id}.v{version}")),
                text.clone(),
            )
        }));
        let next = Catalog::from_texts(texts)?;
        let current = self.current();
        for ((id, version), (fp, file)) in &current.fingerprints {
            match next.fingerprints.get(&(id.clone(), *version)) {
                Some((nfp, _)) if nfp == fp => {}
                Some((_, nfile)) => {
                    return Err(CatalogError {
                        file: nfile.clone(),
                        reason: format!(
                            "process `{id}` v{version} is already published and cannot change: add a new version instead"
                        ),
                    });
                }
                None => {
                    return Err(CatalogError {
                        file: file.clone(),
                        reason: format!(
                            "process `{id}` v{version} was removed, but dossiers may use it: keep the file"
                        ),
                    });
                }
            }
        }
        *applied = fp;
        if next.fingerprints.len() == current.fingerprints.len() {
            return Ok(false);
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(next);
        Ok(true)
    }
}

/// The texts of the files: every `*.toml` of `dir`, or the shipped ones.
fn base_texts(dir: Option<&Path>) -> Result<Vec<(std::path::PathBuf, String)>, CatalogError> {
    let Some(dir) = dir else {
        return Ok(SHIPPED_PROCESSES
            .iter()
            .map(|(name, text)| (Path::new("processes").join(name), (*text).to_owned()))
            .collect());
    };
    let err = |file: &Path, reason: String| CatalogError {
        file: file.display().to_string(),
        reason,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| err(dir, format!("cannot read directory: {e}")))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut texts = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| err(&file, e.to_string()))?;
        texts.push((file, text));
    }
    Ok(texts)
}

#[derive(Debug, thiserror::Error)]
#[error("process catalog: {file}: {reason}")]
pub struct CatalogError {
    pub file: String,
    pub reason: String,
}

impl Catalog {
    /// Load every `*.toml` file of `dir`.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        Catalog::from_texts(base_texts(Some(dir))?)
    }

    /// The process definitions shipped with guichet (embedded at build).
    pub fn shipped() -> Result<Catalog, CatalogError> {
        Catalog::from_texts(base_texts(None)?)
    }

    fn from_texts(
        texts: impl IntoIterator<Item = (std::path::PathBuf, String)>,
    ) -> Result<Catalog, CatalogError> {
        let err = |file: &Path, reason: String| CatalogError {
            file: file.display().to_string(),
            reason,
        };
        let mut catalog = Catalog::default();
        for (file, text) in texts {
            let def = parse_definition(&file, &text)?;
            catalog.fingerprints.insert(
                (def.id.clone(), def.version),
                (fingerprint(&text), file.display().to_string()),
            );
            catalog
                .texts
                .insert((def.id.clone(), def.version), text.clone());
            let versions = catalog.processes.entry(def.id.clone()).or_default();
            if versions.contains_key(&def.version) {
                return Err(err(
                    &file,
                    format!("process `{}` v{} is defined twice", def.id, def.version),
                ));
            }
            versions.insert(def.version, def);
        }
        Ok(catalog)
    }

    /// The newest version of a process.
    pub fn get_latest(&self, id: &str) -> Option<&ProcessDefinition> {
        self.processes.get(id).and_then(|v| v.values().next_back())
    }

    pub fn get(&self, id: &str, version: u32) -> Option<&ProcessDefinition> {
        self.processes.get(id).and_then(|v| v.get(&version))
    }

    /// Every version of a process, oldest first.
    pub fn versions(&self, id: &str) -> Vec<u32> {
        self.processes
            .get(id)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The newest version of every process, by id.
    pub fn latest(&self) -> impl Iterator<Item = &ProcessDefinition> {
        self.processes
            .values()
            .filter_map(|v| v.values().next_back())
    }

    /// Every definition, every version.
    pub fn all(&self) -> impl Iterator<Item = &ProcessDefinition> {
        self.processes.values().flat_map(|v| v.values())
    }

    pub fn len(&self) -> usize {
        self.processes.values().map(|v| v.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// A version's text, and where it comes from (`processes/x.toml`, a
    /// file of the deployment's directory, or `database`).
    pub fn source_of(&self, id: &str, version: u32) -> Option<(&str, String)> {
        let key = (id.to_owned(), version);
        let text = self.texts.get(&key)?;
        let file = &self.fingerprints.get(&key)?.1;
        let origin = if file.starts_with(DATABASE) {
            DATABASE.to_owned()
        } else {
            file.clone()
        };
        Some((text.as_str(), origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_processes_are_embedded_and_used_without_a_directory() {
        let shipped = Catalog::shipped().unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../processes");
        let on_disk = Catalog::load_dir(Path::new(dir)).unwrap();
        assert_eq!(shipped.len(), on_disk.len());
        assert!(shipped.get_latest("passeport").is_some());
        assert!(shipped.get_latest("a-qualifier").is_some());
        let handle = CatalogHandle::load(Path::new("")).unwrap();
        assert_eq!(handle.current().len(), shipped.len());
        assert_eq!(handle.source(), "the shipped processes");
        assert!(!handle.reload_with(&[]).unwrap(), "nothing to reload");
    }

    #[test]
    fn the_shipped_catalog_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../processes");
        let catalog = Catalog::load_dir(&dir).unwrap();
        let p = catalog
            .get_latest("a-qualifier")
            .expect("default triage process");
        assert!(p.state(&p.initial_state).is_some());
        // At least 15 procedures besides triage, across the town's domains;
        // validation has checked every state is reachable and has a way out.
        assert!(
            catalog.latest().count() >= 16,
            "{}",
            catalog.latest().count()
        );
        let domains: HashSet<&str> = catalog.latest().map(|p| p.domain.as_str()).collect();
        assert!(domains.len() >= 10, "{domains:?}");
        for p in catalog.all() {
            assert!(
                !p.description.trim().is_empty(),
                "{} has no description",
                p.id
            );
            for s in &p.states {
                assert!(
                    s.terminal || !s.guidance.trim().is_empty(),
                    "{}: state {} has no guidance",
                    p.id,
                    s.id
                );
            }
        }
        let restricted = catalog
            .get_latest("aide-sociale-ccas")
            .expect("social process");
        assert_eq!(restricted.restricted_group.as_deref(), Some("social"));
    }

    #[test]
    fn an_unknown_initial_state_is_reported_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.toml"),
            "id = \"x\"\nversion = 1\ntitle = \"X\"\ndomain = \"voirie\"\ninitial_state = \"nope\"\n[[states]]\nid = \"a\"\ntitle = \"A\"\nterminal = true\n",
        )
        .unwrap();
        let e = Catalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("broken.toml") && e.contains("nope"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    const SMALL: &str = r#"
id = "petit"
version = 1
title = "Petite démarche"
domain = "voirie"
initial_state = "recue"

[[states]]
id = "recue"
title = "Reçue"

[[states]]
id = "close"
title = "Close"
terminal = true

[[transitions]]
from = "recue"
to = "close"
label = "Clore"
roles = ["agent"]
"#;

    #[test]
    fn unreachable_states_and_dead_ends_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{SMALL}\n[[states]]\nid = \"orpheline\"\ntitle = \"Orpheline\"\nterminal = true\n"
        );
        std::fs::write(dir.path().join("p.toml"), &text).unwrap();
        let e = Catalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("`orpheline` is unreachable"), "{e}");
        let line = text
            .lines()
            .position(|l| l.contains("\"orpheline\""))
            .unwrap()
            + 1;
        assert!(e.contains(&format!("line {line}")), "{e}");

        let dead_end = SMALL.replace("to = \"close\"", "to = \"recue\"");
        std::fs::write(dir.path().join("p.toml"), dead_end).unwrap();
        let e = Catalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("unreachable") || e.contains("no way out"), "{e}");
    }

    #[test]
    fn unknown_guards_roles_and_action_kinds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (bad, expect) in [
            (
                SMALL.replace("roles = [\"agent\"]", "roles = [\"maire\"]"),
                "unknown role `maire`",
            ),
            (
                SMALL.replace(
                    "roles = [\"agent\"]",
                    "roles = [\"agent\"]\nguards = [\"lune_pleine\"]",
                ),
                "unknown guard `lune_pleine`",
            ),
            (
                SMALL.replace(
                    "title = \"Reçue\"",
                    "title = \"Reçue\"\n[[states.actions]]\nkind = \"book_appointment\"",
                ),
                "lacks its appointment_type",
            ),
        ] {
            std::fs::write(dir.path().join("p.toml"), bad).unwrap();
            let e = Catalog::load_dir(dir.path()).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
    }

    #[test]
    fn a_reload_keeps_the_running_catalog_when_a_file_is_invalid_or_a_published_version_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("petit.toml"), SMALL).unwrap();
        let handle = CatalogHandle::load(dir.path()).unwrap();
        assert!(!handle.reload_with(&[]).unwrap(), "nothing changed");

        // A broken new file: refused, the running catalog stays.
        std::fs::write(
            dir.path().join("autre.toml"),
            "id = \"autre\"\nversion = 1\n",
        )
        .unwrap();
        assert!(
            handle
                .reload_with(&[])
                .unwrap_err()
                .to_string()
                .contains("autre.toml")
        );
        assert!(handle.current().get_latest("petit").is_some());
        std::fs::remove_file(dir.path().join("autre.toml")).unwrap();

        // Editing a published version: refused.
        std::fs::write(
            dir.path().join("petit.toml"),
            SMALL.replace("Petite", "Grande"),
        )
        .unwrap();
        let e = handle.reload_with(&[]).unwrap_err().to_string();
        assert!(e.contains("already published"), "{e}");
        assert_eq!(
            handle.current().get_latest("petit").unwrap().title,
            "Petite démarche"
        );

        // A new version in its own file: published.
        std::fs::write(dir.path().join("petit.toml"), SMALL).unwrap();
        std::fs::write(
            dir.path().join("petit.v2.toml"),
            SMALL.replace("version = 1", "version = 2"),
        )
        .unwrap();
        assert!(handle.reload_with(&[]).unwrap());
        assert_eq!(handle.current().get_latest("petit").unwrap().version, 2);
        assert_eq!(handle.current().versions("petit"), vec![1, 2]);
    }

    #[test]
    fn a_misspelt_key_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("typo.toml"),
            "id = \"x\"\nversion = 1\ntitel = \"X\"\n",
        )
        .unwrap();
        let e = Catalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("typo.toml") && e.contains("line 3"), "{e}");
    }
}
