//! The town's model: the data a town hall maintains about itself, kept apart
//! from the technical defaults.
//!
//! Sites, desks and appointment types (the appointment role) and the
//! counter's services, priorities and appointment mappings are town data.
//! The sample town ships as `town/*.toml` at the repository root, embedded
//! in the binary at build time like the process catalog; a non-empty
//! `town_dir` names a directory of `*.toml` files that replaces it whole.
//! Either way the town is a configuration layer between the embedded
//! technical defaults and the operator's file and environment, so
//! `GUICHET__…` variables still override any of it.
//!
//! A town file uses the same tables as the configuration
//! (`[[appointment.sites]]`, `[counter.services]`…) and may only set the
//! keys in [`TOWN_KEYS`]: a town replaces its model without touching a
//! technical setting by accident.

use std::path::Path;

use guichet_platform::config::ConfigError;

include!(concat!(env!("OUT_DIR"), "/town.rs"));

/// The keys a town file may set, per configuration section.
pub const TOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "town",
        &[
            "name",
            "short_name",
            "address",
            "website",
            "logo_url",
            "sms_sender",
        ],
    ),
    ("appointment", &["sites", "desks", "types"]),
    (
        "counter",
        &[
            "services",
            "service_labels",
            "default_service",
            "default_site",
            "priorities",
            "appointment_services",
            "appointment_sites",
        ],
    ),
];

/// One town file: where it comes from (for errors) and its text.
#[derive(Debug, Clone)]
pub struct TownFile {
    pub origin: String,
    pub content: String,
}

/// The town files of `dir`, or the shipped town when `dir` is empty.
pub fn files(dir: &Path) -> Result<Vec<TownFile>, ConfigError> {
    if dir.as_os_str().is_empty() {
        return Ok(SHIPPED_TOWN
            .iter()
            .map(|(name, content)| TownFile {
                origin: format!("shipped town/{name}"),
                content: (*content).to_owned(),
            })
            .collect());
    }
    let unreadable = |e: std::io::Error| {
        ConfigError::invalid(
            "town_dir",
            format!("cannot read the town directory {}: {e}", dir.display()),
        )
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.extension().is_some_and(|x| x == "toml") {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(ConfigError::invalid(
            "town_dir",
            format!("no *.toml town file in {}", dir.display()),
        ));
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let content = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::invalid("town_dir", format!("cannot read {}: {e}", path.display()))
            })?;
            Ok(TownFile {
                origin: path.display().to_string(),
                content,
            })
        })
        .collect()
}

/// `defaults` with the town's keys laid over it, as TOML text: the first
/// configuration layer. A key outside [`TOWN_KEYS`], or set by two town
/// files, is an error naming the key and the file.
pub fn layer(defaults: &str, town: &[TownFile]) -> Result<String, ConfigError> {
    let mut merged: toml::Table = defaults
        .parse()
        .map_err(|e| ConfigError::invalid("defaults", format!("embedded defaults: {e}")))?;
    let mut set_by: Vec<(String, &str)> = Vec::new();
    for file in town {
        let table: toml::Table = file.content.parse().map_err(|e| {
            ConfigError::invalid("town_dir", format!("town file {}: {e}", file.origin))
        })?;
        for (section, value) in table {
            let allowed = TOWN_KEYS
                .iter()
                .find(|(s, _)| *s == section)
                .map(|(_, keys)| *keys)
                .ok_or_else(|| not_town_data(&section, &file.origin))?;
            let toml::Value::Table(keys) = value else {
                return Err(not_town_data(&section, &file.origin));
            };
            let target = merged
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(target) = target else {
                return Err(not_town_data(&section, &file.origin));
            };
            for (key, value) in keys {
                let full = format!("{section}.{key}");
                if !allowed.contains(&key.as_str()) {
                    return Err(not_town_data(&full, &file.origin));
                }
                if let Some((_, first)) = set_by.iter().find(|(k, _)| *k == full) {
                    return Err(ConfigError::invalid(
                        full.clone(),
                        format!("set by two town files: {first} and {}", file.origin),
                    ));
                }
                set_by.push((full, &file.origin));
                target.insert(key, value);
            }
        }
    }
    toml::to_string(&merged)
        .map_err(|e| ConfigError::invalid("town_dir", format!("cannot layer the town: {e}")))
}

fn not_town_data(key: &str, origin: &str) -> ConfigError {
    let allowed: Vec<String> = TOWN_KEYS
        .iter()
        .flat_map(|(s, keys)| keys.iter().map(move |k| format!("{s}.{k}")))
        .collect();
    ConfigError::invalid(
        key,
        format!(
            "set in the town file {origin}, which may only hold town data ({}); technical settings go in guichet.toml or GUICHET__ variables",
            allowed.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuichetConfig;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_shipped_town_is_every_file_of_the_town_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../town");
        let on_disk = files(&dir).unwrap();
        let shipped = files(Path::new("")).unwrap();
        assert_eq!(shipped.len(), on_disk.len());
        for (s, d) in shipped.iter().zip(&on_disk) {
            assert_eq!(s.content, d.content);
        }
    }

    #[test]
    fn without_a_town_dir_the_sample_town_is_loaded() {
        let cfg = GuichetConfig::load(None, Vec::new()).unwrap();
        assert!(cfg.town_dir.as_os_str().is_empty());
        assert_eq!(cfg.appointment.sites.len(), 1);
        assert_eq!(cfg.appointment.sites[0].id, "mairie");
        assert_eq!(cfg.appointment.desks.len(), 2);
        assert_eq!(cfg.appointment.types.len(), 8);
        assert!(
            cfg.appointment
                .types
                .iter()
                .any(|t| t.id == "passeport-depot")
        );
        assert_eq!(cfg.counter.services.get("passeports").unwrap(), "P");
        assert_eq!(cfg.counter.default_service, "general");
        assert_eq!(cfg.counter.default_site, "mairie");
        assert_eq!(*cfg.counter.priorities.get("handicap").unwrap(), 30);
        assert_eq!(
            cfg.counter.appointment_services.get("cni-depot").unwrap(),
            "passeports"
        );
        crate::Role::Appointment.validate(&cfg).unwrap();
        crate::Role::IngressCounter.validate(&cfg).unwrap();
    }

    #[test]
    fn a_town_dir_replaces_the_model_and_keeps_the_technical_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sites.toml"),
            r#"
[[appointment.sites]]
id = "annexe"
name = "Mairie annexe"
address = "2 rue Haute"
zip_code = "69000"
city = "Bourg"
latitude = 45.0
longitude = 4.0

[[appointment.desks]]
id = "annexe-1"
site = "annexe"
name = "Accueil"
opening = ["mon 09:00-12:00"]

[[appointment.types]]
id = "pacs-enregistrement"
name = "Enregistrement d'un PACS"
duration_minutes = 30
max_people = 2
max_delay_days = 90
"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("counter.toml"),
            "[counter]\ndefault_service = \"accueil\"\ndefault_site = \"annexe\"\n[counter.services]\naccueil = \"A\"\n",
        )
        .unwrap();
        let dir_s = dir.path().display().to_string();
        let cfg = GuichetConfig::load(None, env(&[("GUICHET__TOWN_DIR", &dir_s)])).unwrap();
        assert_eq!(cfg.appointment.sites.len(), 1);
        assert_eq!(cfg.appointment.sites[0].id, "annexe");
        assert_eq!(cfg.appointment.desks.len(), 1);
        assert_eq!(cfg.appointment.types.len(), 1);
        assert_eq!(cfg.counter.services.len(), 1);
        assert_eq!(cfg.counter.default_service, "accueil");
        assert!(cfg.counter.priorities.is_empty());
        assert!(cfg.counter.appointment_services.is_empty());
        // Technical defaults untouched.
        assert_eq!(cfg.appointment.slot_minutes, 15);
        assert_eq!(cfg.counter.http_addr, "127.0.0.1:8089");
        crate::Role::Appointment.validate(&cfg).unwrap();
        crate::Role::IngressCounter.validate(&cfg).unwrap();
    }

    #[test]
    fn the_environment_still_overrides_the_town() {
        let cfg = GuichetConfig::load(
            None,
            env(&[("GUICHET__COUNTER__DEFAULT_SERVICE", "passeports")]),
        )
        .unwrap();
        assert_eq!(cfg.counter.default_service, "passeports");
        assert_eq!(cfg.appointment.sites[0].id, "mairie");
    }

    #[test]
    fn a_town_file_cannot_set_a_technical_setting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("counter.toml"),
            "[counter]\nhttp_addr = \"0.0.0.0:1\"\n",
        )
        .unwrap();
        let dir_s = dir.path().display().to_string();
        let err = GuichetConfig::load(None, env(&[("GUICHET__TOWN_DIR", &dir_s)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`counter.http_addr`"), "{err}");
        assert!(err.contains("counter.toml"), "{err}");
    }

    #[test]
    fn two_town_files_setting_one_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.toml", "b.toml"] {
            std::fs::write(
                dir.path().join(name),
                "[counter.services]\ngeneral = \"G\"\n",
            )
            .unwrap();
        }
        let dir_s = dir.path().display().to_string();
        let err = GuichetConfig::load(None, env(&[("GUICHET__TOWN_DIR", &dir_s)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`counter.services`"), "{err}");
        assert!(err.contains("two town files"), "{err}");
    }

    #[test]
    fn a_missing_town_dir_names_the_key() {
        let err = GuichetConfig::load(
            None,
            env(&[("GUICHET__TOWN_DIR", "/nonexistent/guichet-town")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`town_dir`"), "{err}");
    }
}
