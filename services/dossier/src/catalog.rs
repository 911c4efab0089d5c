//! The process catalog: `processes/*.toml`, one versioned definition each.
//!
//! A definition models a town-hall procedure as states and transitions with
//! French guidance for the agent in each state. Files are validated at load
//! and an error names the file and the definition; the catalog is immutable
//! once loaded.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

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
    pub states: Vec<StateDefinition>,
    #[serde(default)]
    pub transitions: Vec<TransitionDefinition>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionDefinition {
    pub from: String,
    pub to: String,
    /// Roles allowed to fire it (`agent`, `supervisor`, `admin`, `service`).
    pub roles: Vec<String>,
}

impl ProcessDefinition {
    pub fn state(&self, id: &str) -> Option<&StateDefinition> {
        self.states.iter().find(|s| s.id == id)
    }

    fn validate(&self) -> Result<(), String> {
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "id `{}` must be lower-case ASCII letters, digits and '-'",
                self.id
            ));
        }
        if self.version == 0 {
            return Err("version must be at least 1".into());
        }
        let mut seen = HashSet::new();
        for s in &self.states {
            if !seen.insert(s.id.as_str()) {
                return Err(format!("state `{}` is declared twice", s.id));
            }
        }
        if !seen.contains(self.initial_state.as_str()) {
            return Err(format!(
                "initial_state `{}` is not a declared state",
                self.initial_state
            ));
        }
        for t in &self.transitions {
            for end in [&t.from, &t.to] {
                if !seen.contains(end.as_str()) {
                    return Err(format!(
                        "transition {} → {} names unknown state `{end}`",
                        t.from, t.to
                    ));
                }
            }
            for r in &t.roles {
                if r.parse::<guichet_platform::auth::Role>().is_err() {
                    return Err(format!(
                        "transition {} → {} names unknown role `{r}`",
                        t.from, t.to
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Every loaded definition, by id then version.
#[derive(Debug, Default)]
pub struct Catalog {
    processes: BTreeMap<String, BTreeMap<u32, ProcessDefinition>>,
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
        let mut catalog = Catalog::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| err(&file, e.to_string()))?;
            let def: ProcessDefinition =
                toml::from_str(&text).map_err(|e| err(&file, e.to_string()))?;
            def.validate().map_err(|reason| {
                err(
                    &file,
                    format!("process `{}` v{}: {reason}", def.id, def.version),
                )
            })?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../processes");
        let catalog = Catalog::load_dir(&dir).unwrap();
        let p = catalog
            .get_latest("a-qualifier")
            .expect("default triage process");
        assert!(p.state(&p.initial_state).is_some());
    }

    #[test]
    fn an_unknown_initial_state_is_reported_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.toml"),
            "id = \"x\"\nversion = 1\ntitle = \"X\"\ndomain = \"d\"\ninitial_state = \"nope\"\n[[states]]\nid = \"a\"\ntitle = \"A\"\n",
        )
        .unwrap();
        let e = Catalog::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("broken.toml") && e.contains("nope"), "{e}");
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
