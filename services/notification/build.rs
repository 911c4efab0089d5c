//! Embeds the French templates of the repository's `templates/` directory
//! (one `<id>.toml` per template) into the binary, so every role process and
//! every test has them without a path to configure; `notification.templates_dir`
//! may add or override templates at run time.

use std::io::Write;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../templates");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("builtin_templates.rs");
    let mut f = std::fs::File::create(out)?;
    writeln!(f, "pub const BUILTIN: &[(&str, &str)] = &[")?;
    for p in &files {
        println!("cargo:rerun-if-changed={}", p.display());
        let id = p
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or("template file name is not UTF-8")?;
        let abs = p.canonicalize()?;
        writeln!(
            f,
            "    ({id:?}, include_str!({:?})),",
            abs.display().to_string()
        )?;
    }
    writeln!(f, "];")?;
    Ok(())
}
