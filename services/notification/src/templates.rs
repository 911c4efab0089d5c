//! French message templates.
//!
//! One TOML file per template, `<id>.toml`, with an SMS text and/or an email
//! subject and body; `{{name}}` is replaced by the request's variable
//! `name` (plus `town`, from configuration). A variable the text uses but
//! the request lacks is an error that names it: the message is
//! dead-lettered with that reason rather than sent with a hole in it.
//!
//! The repository's `templates/` directory is embedded at build time; the
//! optional `notification.templates_dir` adds or overrides templates (a
//! town's own wording). Every template is parsed and checked at start-up.
//!
//! The appointment role's messages (`appointment-*`) are templates here too:
//! it sends the booking's variables, never French text. A producer may
//! still send a template id this catalog does not know with
//! `variables["text"]` (and optionally `variables["subject"]`): that is
//! delivered as is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_templates.rs"));
}

/// Variables a reminder of the process catalog gets (see
/// `consumer::reminder_variables`): the templates the shipped processes
/// reference may use only these.
pub const DOSSIER_VARIABLES: &[&str] = &[
    "town",
    "reference",
    "process",
    "state",
    "salutation",
    "given_name",
    "family_name",
];

/// The acknowledgement template; `email-accuse-reception-<process_id>`
/// overrides it for one process when present.
pub const ACKNOWLEDGEMENT: &str = "email-accuse-reception";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    description: String,
    /// RFC 3834 value for emails of this template ("auto-generated",
    /// "auto-replied"); "no" when absent (a person's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auto_submitted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sms: Option<String>,
    /// The SMS is fitted to the GSM-7 alphabet letters too (ô → o, ê → e…):
    /// for messages whose variables (a site, an appointment type, a
    /// document title) would otherwise switch them to UCS-2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sms_gsm7: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<EmailTemplate>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmailTemplate {
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: String,
    pub description: String,
    pub auto_submitted: Option<String>,
    pub sms: Option<String>,
    pub sms_gsm7: bool,
    pub email: Option<EmailTemplate>,
    /// Where its wording comes from: `shipped`, `directory`
    /// (`notification.templates_dir`) or `studio` (the town's process
    /// owners, kept in the database).
    pub origin: &'static str,
}

impl Template {
    /// The template as a file of `templates_dir` would hold it.
    pub fn to_toml(&self) -> String {
        toml::to_string(&TemplateFile {
            description: self.description.clone(),
            auto_submitted: self.auto_submitted.clone(),
            sms: self.sms.clone(),
            sms_gsm7: self.sms_gsm7,
            email: self.email.clone(),
        })
        .unwrap_or_default()
    }

    /// Every variable its texts use.
    pub fn variables(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let texts = self
            .sms
            .iter()
            .chain(self.email.iter().flat_map(|e| [&e.subject, &e.body]));
        for t in texts {
            out.extend(variables_of(t).unwrap_or_default());
        }
        out
    }
}

/// A template's wording as a form sets it.
#[derive(Debug, Clone, Default)]
pub struct Wording {
    pub description: String,
    pub sms: String,
    pub email_subject: String,
    pub email_body: String,
}

/// The running templates: the shipped ones and `templates_dir`'s (the
/// base), with the studio's wordings on top, replaced as a whole when those
/// change.
#[derive(Debug, Clone)]
pub struct Templates {
    base: std::sync::Arc<Catalog>,
    current: std::sync::Arc<std::sync::RwLock<std::sync::Arc<Catalog>>>,
    /// The overrides the running catalog was built with: an unchanged set
    /// is not rebuilt.
    applied: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Templates {
    pub fn new(base: Catalog) -> Templates {
        let base = std::sync::Arc::new(base);
        Templates {
            current: std::sync::Arc::new(std::sync::RwLock::new(base.clone())),
            base,
            applied: Default::default(),
        }
    }

    pub fn current(&self) -> std::sync::Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn base(&self) -> &Catalog {
        &self.base
    }

    /// The base with `overrides` (id, TOML) on top. An override this build
    /// no longer accepts is left out (and logged); the base wording stays.
    pub fn apply(&self, overrides: &[(String, String)]) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if applied.as_slice() == overrides {
            return;
        }
        let mut next = (*self.base).clone();
        for (id, text) in overrides {
            if let Err(e) = next.add_from(id, text, "studio") {
                tracing::error!(template = %id, error = %e, "studio wording refused; the base wording stays");
            }
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(next);
        *applied = overrides.to_vec();
    }

    /// Check a new wording of `id`: the same checks as a file, and only the
    /// variables its producers send (those the base wording uses, and the
    /// dossier's for a process message). Returns its TOML.
    pub fn check(&self, id: &str, w: &Wording) -> Result<String, TemplateError> {
        let bad = |field: &str, reason: String| TemplateError::Invalid(field.to_owned(), reason);
        let base = self.base.get(id);
        let previous = self.current().get(id).cloned();
        let auto_submitted = previous
            .as_ref()
            .and_then(|t| t.auto_submitted.clone())
            .or_else(|| Some("auto-generated".into()));
        let email = match (w.email_subject.trim(), w.email_body.trim()) {
            ("", "") => None,
            (subject, body) => Some(EmailTemplate {
                subject: subject.to_owned(),
                body: format!("{}\n", body.replace("\r\n", "\n")),
            }),
        };
        let file = TemplateFile {
            description: w.description.trim().to_owned(),
            auto_submitted,
            sms: Some(w.sms.trim().replace("\r\n", "\n")).filter(|s| !s.is_empty()),
            sms_gsm7: previous.as_ref().is_some_and(|t| t.sms_gsm7),
            email,
        };
        let text = toml::to_string(&file).map_err(|e| bad("template", e.to_string()))?;
        let mut scratch = Catalog::default();
        scratch.add_from(id, &text, "studio")?;
        let checked = scratch.get(id).expect("just added");
        let mut allowed: BTreeSet<String> =
            DOSSIER_VARIABLES.iter().map(|v| (*v).to_owned()).collect();
        if let Some(b) = base {
            allowed.extend(b.variables());
        }
        if let Some(p) = &previous {
            allowed.extend(p.variables());
        }
        let unknown: Vec<String> = checked
            .variables()
            .into_iter()
            .filter(|v| !allowed.contains(v))
            .map(|v| format!("{{{{{v}}}}}"))
            .collect();
        if !unknown.is_empty() {
            return Err(bad(
                "variables",
                format!(
                    "{} is not sent with this message (known: {})",
                    unknown.join(", "),
                    allowed
                        .iter()
                        .map(|v| format!("{{{{{v}}}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {0}: {1}")]
    Invalid(String, String),
    #[error("unknown template `{0}` and no variables[\"text\"] to send as is")]
    Unknown(String),
    #[error("template `{template}` has no {channel} version")]
    NoChannel { template: String, channel: String },
    #[error("template `{template}` needs the missing variable(s) {missing}")]
    Missing { template: String, missing: String },
}

/// The variable names `text` uses, or a syntax error.
pub fn variables_of(text: &str) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "a `{{` is never closed".to_owned())?;
        let name = after[..end].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "`{{{{{}}}}}` is not a variable name (a-z, 0-9, _)",
                &after[..end]
            ));
        }
        out.insert(name.to_owned());
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err("a `}}` closes nothing".into());
    }
    Ok(out)
}

/// Replace every `{{name}}` of `text`; the error lists what is missing.
pub fn render(text: &str, vars: &HashMap<String, String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            // Checked at load time; keep the text rather than lose it.
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = after[..end].trim();
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                if !missing.iter().any(|m| m == name) {
                    missing.push(name.to_owned());
                }
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// What to send, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub body: String,
    pub auto_submitted: Option<String>,
    /// The template actually used (an acknowledgement may be overridden
    /// per process).
    pub template: String,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    templates: BTreeMap<String, Template>,
}

impl Catalog {
    /// The embedded templates, then those of `dir` (when given) on top.
    pub fn load(dir: Option<&Path>) -> Result<Catalog, TemplateError> {
        let mut catalog = Catalog::default();
        for (id, text) in builtin::BUILTIN {
            catalog.add_from(id, text, "shipped")?;
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                TemplateError::Invalid(dir.display().to_string(), format!("cannot read: {e}"))
            })?;
            let mut paths: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            paths.sort();
            for p in paths {
                let id = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    TemplateError::Invalid(p.display().to_string(), format!("cannot read: {e}"))
                })?;
                catalog.add_from(&id, &text, "directory")?;
            }
        }
        Ok(catalog)
    }

    /// Parse and check one template; replaces one of the same id.
    pub fn add(&mut self, id: &str, text: &str) -> Result<(), TemplateError> {
        self.add_from(id, text, "shipped")
    }

    /// [`Catalog::add`], saying where the wording comes from.
    pub fn add_from(
        &mut self,
        id: &str,
        text: &str,
        origin: &'static str,
    ) -> Result<(), TemplateError> {
        let bad = |reason: String| TemplateError::Invalid(id.to_owned(), reason);
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(bad(
                "the id (file name) must be lowercase a-z, 0-9 and -".into()
            ));
        }
        let file: TemplateFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if file.description.trim().is_empty() {
            return Err(bad("description is empty".into()));
        }
        if file.sms.is_none() && file.email.is_none() {
            return Err(bad("has neither an sms text nor an [email] part".into()));
        }
        if let Some(a) = &file.auto_submitted
            && !["no", "auto-generated", "auto-replied"].contains(&a.as_str())
        {
            return Err(bad(
                "auto_submitted must be no, auto-generated or auto-replied".into(),
            ));
        }
        if let Some(sms) = &file.sms {
            if sms.trim().is_empty() {
                return Err(bad("sms is empty".into()));
            }
            variables_of(sms).map_err(|e| bad(format!("sms: {e}")))?;
        }
        if let Some(email) = &file.email {
            if email.subject.trim().is_empty() || email.body.trim().is_empty() {
                return Err(bad("email subject and body must not be empty".into()));
            }
            if email.subject.contains(['\r', '\n']) {
                return Err(bad("email subject must be one line".into()));
            }
            variables_of(&email.subject).map_err(|e| bad(format!("email.subject: {e}")))?;
            variables_of(&email.body).map_err(|e| bad(format!("email.body: {e}")))?;
        }
        self.templates.insert(
            id.to_owned(),
            Template {
                id: id.to_owned(),
                description: file.description,
                auto_submitted: file.auto_submitted,
                sms: file.sms,
                sms_gsm7: file.sms_gsm7,
                email: file.email,
                origin,
            },
        );
        Ok(())
    }

    /// Every template, by id.
    pub fn all(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    pub fn get(&self, id: &str) -> Option<&Template> {
        self.templates.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.templates.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The template a request names, with the per-process override of the
    /// acknowledgement (`variables["process_id"]`).
    fn resolve(&self, id: &str, vars: &HashMap<String, String>) -> Option<&Template> {
        if id == ACKNOWLEDGEMENT
            && let Some(p) = vars.get("process_id")
            && let Some(t) = self.templates.get(&format!("{ACKNOWLEDGEMENT}-{p}"))
        {
            return Some(t);
        }
        self.templates.get(id)
    }

    /// The SMS text of template `id` with `vars`.
    pub fn render_sms(
        &self,
        id: &str,
        vars: &HashMap<String, String>,
    ) -> Result<String, TemplateError> {
        match self.resolve(id, vars) {
            Some(t) => {
                let text = t.sms.as_deref().ok_or_else(|| TemplateError::NoChannel {
                    template: t.id.clone(),
                    channel: "sms".into(),
                })?;
                render(text, vars).map_err(|m| missing(&t.id, m))
            }
            None => vars
                .get("text")
                .filter(|t| !t.trim().is_empty())
                .cloned()
                .ok_or_else(|| TemplateError::Unknown(id.to_owned())),
        }
    }

    /// The SMS as sent: [`Catalog::render_sms`], its typography fitted to
    /// GSM-7 (« » ’ –), and its letters too when the template says
    /// `sms_gsm7 = true`.
    pub fn sms_text(
        &self,
        id: &str,
        vars: &HashMap<String, String>,
    ) -> Result<String, TemplateError> {
        let text = self.render_sms(id, vars)?;
        let text = crate::gsm::fit_typography(&text).into_owned();
        Ok(match self.resolve(id, vars) {
            Some(t) if t.sms_gsm7 => crate::gsm::fit_letters(&text).into_owned(),
            _ => text,
        })
    }

    /// The email subject and body of template `id` with `vars`; a request's
    /// subject override is applied by the caller.
    pub fn render_email(
        &self,
        id: &str,
        vars: &HashMap<String, String>,
    ) -> Result<RenderedEmail, TemplateError> {
        match self.resolve(id, vars) {
            Some(t) => {
                let e = t.email.as_ref().ok_or_else(|| TemplateError::NoChannel {
                    template: t.id.clone(),
                    channel: "email".into(),
                })?;
                let subject = render(&e.subject, vars);
                let body = render(&e.body, vars);
                match (subject, body) {
                    (Ok(subject), Ok(body)) => Ok(RenderedEmail {
                        subject,
                        body,
                        auto_submitted: t.auto_submitted.clone(),
                        template: t.id.clone(),
                    }),
                    (s, b) => {
                        let mut m = s.err().unwrap_or_default();
                        for v in b.err().unwrap_or_default() {
                            if !m.contains(&v) {
                                m.push(v);
                            }
                        }
                        Err(missing(&t.id, m))
                    }
                }
            }
            None => {
                let body = vars
                    .get("text")
                    .filter(|t| !t.trim().is_empty())
                    .cloned()
                    .ok_or_else(|| TemplateError::Unknown(id.to_owned()))?;
                let subject = vars
                    .get("subject")
                    .filter(|s| !s.trim().is_empty())
                    .cloned()
                    .unwrap_or_else(|| match vars.get("town") {
                        Some(t) => format!("Message de la mairie de {t}"),
                        None => "Message de la mairie".to_owned(),
                    });
                Ok(RenderedEmail {
                    subject,
                    body,
                    auto_submitted: None,
                    template: id.to_owned(),
                })
            }
        }
    }
}

fn missing(template: &str, m: Vec<String>) -> TemplateError {
    TemplateError::Missing {
        template: template.to_owned(),
        missing: m.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn catalog() -> Catalog {
        Catalog::load(None).expect("the shipped templates are valid")
    }

    #[test]
    fn every_shipped_template_parses() {
        let c = catalog();
        assert!(c.len() >= 50, "{} templates", c.len());
        for id in [
            "signature-code",
            "email-accuse-reception",
            "email-reponse-agent",
        ] {
            assert!(c.get(id).is_some(), "{id}");
        }
    }

    /// Every template id the shipped process catalog references exists, and
    /// renders with only the variables a dossier reminder provides.
    #[test]
    fn every_template_of_the_shipped_processes_exists_and_renders() {
        let c = catalog();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../processes");
        let mut ids = BTreeSet::new();
        for entry in std::fs::read_dir(dir).expect("processes dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let doc: toml::Value =
                toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("toml");
            collect_templates(&doc, &mut ids);
        }
        assert!(ids.len() >= 40, "only {} template ids found", ids.len());
        let v: HashMap<String, String> = DOSSIER_VARIABLES
            .iter()
            .map(|k| (k.to_string(), format!("<{k}>")))
            .collect();
        for id in &ids {
            let t = c
                .get(id)
                .unwrap_or_else(|| panic!("template `{id}` is missing"));
            assert!(t.sms.is_some() && t.email.is_some(), "{id}: sms and email");
            c.render_sms(id, &v).unwrap_or_else(|e| panic!("{id}: {e}"));
            c.render_email(id, &v)
                .unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }

    fn collect_templates(v: &toml::Value, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    if k == "template"
                        && let toml::Value::String(s) = v
                    {
                        out.insert(s.clone());
                    }
                    collect_templates(v, out);
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| collect_templates(v, out)),
            _ => {}
        }
    }

    /// Process SMS texts avoid ê, ç, ’… so they go as GSM-7 (160
    /// characters a segment rather than 70) when the variables do.
    #[test]
    fn process_sms_texts_stay_in_gsm7() {
        let c = catalog();
        let v: HashMap<String, String> = DOSSIER_VARIABLES
            .iter()
            .map(|k| (k.to_string(), "Abc".to_owned()))
            .collect();
        for id in c.ids() {
            let Ok(text) = c.render_sms(id, &v) else {
                continue;
            };
            if id == "signature-code" {
                continue;
            }
            assert!(crate::gsm::is_gsm7(&text), "{id}: {text}");
        }
    }

    #[test]
    fn the_signature_code_sms_is_the_agreed_text() {
        let text = catalog()
            .render_sms(
                "signature-code",
                &vars(&[
                    ("town", "Villeneuve"),
                    ("town_short", "Villeneuve"),
                    ("document", "Avenant au contrat"),
                    ("code", "042917"),
                    ("minutes", "10"),
                    ("link", "https://x"),
                ]),
            )
            .expect("renders");
        assert_eq!(
            text,
            "Mairie de Villeneuve : votre code pour signer « Avenant au contrat » est 042917 (valable 10 min). Ne le donnez à personne. Signez ici : https://x"
        );
    }

    /// The signing SMS (with its link) fits two GSM-7 segments; the
    /// appointment SMS, with the shipped town's names ("Hôtel de ville"),
    /// go out in GSM-7 too.
    #[test]
    fn signing_and_appointment_sms_go_out_in_gsm7() {
        let c = catalog();
        let vars = vars(&[
            ("town", "Villeneuve"),
            ("town_short", "Villeneuve"),
            ("town_name", "Mairie de Villeneuve"),
            ("document", "Avenant au contrat d'accueil en crèche"),
            ("code", "042917"),
            ("minutes", "10"),
            (
                "link",
                "https://signature.villeneuve.example.fr/s/Jx1kQ8v0bW3nR7tY5uZ2aC4dE6fG8hI0",
            ),
            ("appointment_type", "Dépôt de demande de passeport"),
            ("day", "vendredi 8 janvier 2027"),
            ("hour", "10h00"),
            ("site", "Hôtel de ville"),
            ("address", "Place de la Mairie, 47300 Villeneuve"),
            ("reference", "RDV-ABC123"),
            ("sent", "2"),
            ("max", "3"),
        ]);
        let text_signing = c.sms_text("signature-code", &vars).expect("renders");
        let shape = crate::gsm::shape(&text_signing);
        assert_eq!(shape.encoding, crate::gsm::Encoding::Gsm7, "{text_signing}");
        assert_eq!(shape.segments, 2, "{text_signing}");
        // The appointment messages carry a manage link as long as the
        // appointment role makes them: three GSM-7 segments at most (five
        // or six in UCS-2 with the ô of "Hôtel de ville").
        let mut vars = vars.clone();
        vars.insert(
            "link".into(),
            "https://rendez-vous.mairie.example.fr/rendez-vous/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b?jeton=Jx1kQ8v0bW3nR7tY5uZ2aC4dE6fG8hI0".into(),
        );
        for id in [
            "appointment-confirmation",
            "appointment-reminder",
            "appointment-cancellation",
            "appointment-cancellation-by-town",
            "appointment-waitlist-offer",
        ] {
            let text = c.sms_text(id, &vars).expect("renders");
            let shape = crate::gsm::shape(&text);
            assert_eq!(shape.encoding, crate::gsm::Encoding::Gsm7, "{id}: {text}");
            assert!(
                shape.segments <= 3,
                "{id}: {} segments: {text}",
                shape.segments
            );
            let raw = c.render_sms(id, &vars).expect("renders");
            assert_eq!(
                crate::gsm::shape(&raw).encoding,
                crate::gsm::Encoding::Ucs2,
                "{id}: the test's names need the fitting"
            );
        }
        let signing = text_signing;
        assert!(signing.ends_with("Signez ici : https://signature.villeneuve.example.fr/s/Jx1kQ8v0bW3nR7tY5uZ2aC4dE6fG8hI0"));
        assert!(
            signing.contains("\"Avenant au contrat d'accueil en crèche\""),
            "{signing}"
        );
    }

    /// The appointment messages, word for word what the appointment role
    /// rendered itself before they moved here.
    #[test]
    fn the_appointment_messages_are_the_agreed_texts() {
        let booking = vars(&[
            ("town", "Ville"),
            ("town_name", "Mairie"),
            ("appointment_type", "Dépôt de demande de passeport"),
            ("day", "vendredi 8 janvier 2027"),
            ("hour", "10h00"),
            ("site", "Hôtel de ville"),
            ("address", "1 place de la Mairie, 75000 Ville"),
            ("reference", "RDV-ABC"),
            ("link", "https://x/r"),
        ]);
        let c = catalog();
        let sms = |id: &str| c.render_sms(id, &booking).expect("renders");
        assert_eq!(
            sms("appointment-confirmation"),
            "Mairie – Votre rendez-vous « Dépôt de demande de passeport » est confirmé le vendredi 8 janvier 2027 à 10h00, Hôtel de ville (1 place de la Mairie, 75000 Ville). Référence RDV-ABC. Pour annuler ou déplacer : https://x/r"
        );
        assert_eq!(
            sms("appointment-reminder"),
            "Mairie – Rappel : rendez-vous « Dépôt de demande de passeport » le vendredi 8 janvier 2027 à 10h00, Hôtel de ville (1 place de la Mairie, 75000 Ville). Référence RDV-ABC. Vous ne pouvez pas venir ? Annulez ou déplacez votre rendez-vous : https://x/r"
        );
        assert_eq!(
            sms("appointment-cancellation"),
            "Mairie – Votre rendez-vous « Dépôt de demande de passeport » du vendredi 8 janvier 2027 à 10h00, Hôtel de ville, est bien annulé. Référence RDV-ABC."
        );
        assert_eq!(
            sms("appointment-cancellation-by-town"),
            "Mairie – Nous sommes désolés : votre rendez-vous « Dépôt de demande de passeport » du vendredi 8 janvier 2027 à 10h00, Hôtel de ville, est annulé par la mairie. Référence RDV-ABC. Reprenez rendez-vous en ligne ou contactez la mairie."
        );
        let email = c
            .render_email("appointment-confirmation", &booking)
            .expect("renders");
        assert_eq!(email.subject, "Confirmation de votre rendez-vous");
        assert_eq!(
            email.body,
            format!(
                "Bonjour,\n\n{}\n\nLa mairie de Ville\n",
                sms("appointment-confirmation")
            )
        );
        assert_eq!(email.auto_submitted.as_deref(), Some("auto-generated"));

        let offer = vars(&[
            ("town", "Ville"),
            ("town_name", "Mairie"),
            ("appointment_type", "Dépôt de demande de passeport"),
            ("day", "lundi 4 janvier 2027"),
            ("hour", "09h00"),
            ("site", "Hôtel de ville"),
            ("link", "https://x/n"),
            ("sent", "2"),
            ("max", "3"),
        ]);
        let text = "Mairie – Un créneau plus proche s'est libéré pour « Dépôt de demande de passeport » : le lundi 4 janvier 2027 à 09h00, Hôtel de ville. Réservez-le vite : https://x/n (message 2/3)";
        assert_eq!(
            c.render_sms("appointment-waitlist-offer", &offer).unwrap(),
            text
        );
        let email = c
            .render_email("appointment-waitlist-offer", &offer)
            .unwrap();
        assert_eq!(email.subject, "Message de la mairie de Ville");
        assert_eq!(email.body, text);
        assert_eq!(email.auto_submitted, None);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = catalog()
            .render_sms("signature-code", &vars(&[("town", "V")]))
            .expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("code") && msg.contains("document") && msg.contains("minutes"));
    }

    #[test]
    fn unknown_templates_pass_text_through_or_fail() {
        let c = catalog();
        assert_eq!(
            c.render_sms("appointment-x", &vars(&[("text", "Bonjour")])),
            Ok("Bonjour".into())
        );
        let e = c
            .render_email(
                "appointment-x",
                &vars(&[("text", "Corps"), ("town", "Villeneuve")]),
            )
            .expect("pass-through");
        assert_eq!(e.subject, "Message de la mairie de Villeneuve");
        assert_eq!(e.body, "Corps");
        assert!(matches!(
            c.render_sms("nope", &vars(&[])),
            Err(TemplateError::Unknown(_))
        ));
    }

    #[test]
    fn the_acknowledgement_is_overridden_per_process() {
        let c = catalog();
        let base = vars(&[
            ("town", "Villeneuve"),
            ("reference", "VIN-2026-000001"),
            ("salutation", "Bonjour"),
        ]);
        let plain = c.render_email(ACKNOWLEDGEMENT, &base).expect("renders");
        assert_eq!(plain.template, ACKNOWLEDGEMENT);
        assert!(plain.body.contains("VIN-2026-000001 a bien été reçue"));
        let mut v = base.clone();
        v.insert("process_id".into(), "passeport".into());
        let special = c.render_email(ACKNOWLEDGEMENT, &v).expect("renders");
        assert_eq!(special.template, "email-accuse-reception-passeport");
        v.insert("process_id".into(), "sans-modele".into());
        assert_eq!(
            c.render_email(ACKNOWLEDGEMENT, &v)
                .expect("renders")
                .template,
            ACKNOWLEDGEMENT
        );
    }

    #[test]
    fn syntax_errors_are_refused_at_load() {
        let mut c = Catalog::default();
        let e = c
            .add("x", "description = \"d\"\nsms = \"Bonjour {{nom\"")
            .expect_err("unclosed");
        assert!(e.to_string().contains("never closed"));
        assert!(
            c.add("x", "description = \"d\"\nsms = \"{{Nom}}\"")
                .is_err()
        );
        assert!(c.add("x", "description = \"d\"").is_err());
        assert!(c.add("X", "description = \"d\"\nsms = \"a\"").is_err());
        assert!(
            c.add("x", "description = \"d\"\nsms = \"{{ nom }}\"")
                .is_ok()
        );
        assert_eq!(
            render("{{ nom }} !", &vars(&[("nom", "Léa")])),
            Ok("Léa !".into())
        );
    }
}
