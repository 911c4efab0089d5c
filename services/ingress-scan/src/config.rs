//! The `[scan]` configuration section.

use std::path::PathBuf;

use guichet_platform::config::{ConfigError, validate_database_url};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    /// The dossier role: who may see a letter in the listings is the
    /// decision of the dossier it went to (set automatically when both run
    /// in the same process).
    #[serde(default = "default_dossier_url")]
    pub dossier_url: String,
    /// The watched folder (a share network scanners write to); files are
    /// taken from `<watch_dir>/inbox` and moved to `done/` or `quarantine/`.
    /// Empty: `<data_dir>/scan`.
    #[serde(default)]
    pub watch_dir: PathBuf,
    /// How often the inbox is listed.
    pub poll_interval_ms: u64,
    /// A file is read only once its size and modification time have not
    /// changed for this long (scanners write in place over SMB/NFS).
    pub stable_ms: u64,
    /// Files larger than this are quarantined (`TOO_LARGE`).
    pub max_file_bytes: u64,
    /// Documents with more pages are quarantined (`TOO_MANY_PAGES`).
    pub max_pages: u32,
    /// Images whose shorter side is below this many pixels are quarantined
    /// (`IMAGE_TOO_SMALL`): a 300-dpi A4 page is 2480 × 3508.
    pub min_image_side_px: u32,
    /// Time allowed to OCR one page before the file is quarantined
    /// (`OCR_TIMEOUT`), in milliseconds; PDF tools get the same bound per call.
    pub ocr_timeout_ms: u64,
    /// Tesseract language(s), e.g. `fra` or `fra+eng`.
    pub ocr_language: String,
    /// Resolution image-only PDF pages are rendered at for OCR.
    pub render_dpi: u32,
    /// Pixel budget of one page given to OCR, checked before anything is
    /// decoded or rendered. A PDF page whose declared size (its MediaBox,
    /// from `pdfinfo -box`) would exceed it at `render_dpi` is rendered at
    /// the highest resolution that fits, never below 50 dpi; a page that
    /// does not fit even then, or an image whose header declares more
    /// pixels, is quarantined (`TOO_LARGE`). The default, 40 million, holds
    /// an A4 page at 600 dpi (34.8 M; 8.7 M at 300 dpi).
    #[serde(default = "default_ocr_max_pixels_per_page")]
    pub ocr_max_pixels_per_page: u64,
    /// Address space (`RLIMIT_AS`) each OCR or PDF tool process may use, in
    /// MiB; a tool stopped by it quarantines the file (`OCR_FAILED`, "memory
    /// limit"). Tesseract needs about 200 MiB for an A4 page at 300 dpi and
    /// 250 MiB at 600 dpi; below about 100 MiB the tools cannot even start.
    #[serde(default = "default_ocr_memory_mb")]
    pub ocr_memory_mb: u64,
    /// Files read at the same time (each OCR is one process).
    pub concurrency: usize,
    /// Dossier reference prefix preferred when a letter quotes several
    /// references (the dossier role's `reference_prefix`).
    pub reference_prefix: String,
    /// Executables (on PATH by default; the Debian packages tesseract-ocr,
    /// tesseract-ocr-fra and poppler-utils provide them).
    pub tesseract_bin: String,
    pub pdftotext_bin: String,
    pub pdftoppm_bin: String,
    pub pdfinfo_bin: String,
}

fn default_ocr_max_pixels_per_page() -> u64 {
    40_000_000
}

fn default_dossier_url() -> String {
    "http://127.0.0.1:50051".into()
}

fn default_ocr_memory_mb() -> u64 {
    1024
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_database_url("scan.database_url", &self.database_url)?;
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::invalid(format!("scan.{key}"), "must be > 0"))
            } else {
                Ok(())
            }
        };
        positive("poll_interval_ms", self.poll_interval_ms)?;
        positive("max_file_bytes", self.max_file_bytes)?;
        positive("max_pages", u64::from(self.max_pages))?;
        positive("ocr_timeout_ms", self.ocr_timeout_ms)?;
        positive("concurrency", self.concurrency as u64)?;
        positive("ocr_max_pixels_per_page", self.ocr_max_pixels_per_page)?;
        positive("ocr_memory_mb", self.ocr_memory_mb)?;
        if self.ocr_memory_mb > 1 << 20 {
            return Err(ConfigError::invalid(
                "scan.ocr_memory_mb",
                "must be at most 1048576 (1 TiB)",
            ));
        }
        if !(72..=600).contains(&self.render_dpi) {
            return Err(ConfigError::invalid(
                "scan.render_dpi",
                "must be between 72 and 600",
            ));
        }
        if self.ocr_language.is_empty()
            || !self
                .ocr_language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '_')
        {
            return Err(ConfigError::invalid(
                "scan.ocr_language",
                "must be Tesseract language codes such as `fra` or `fra+eng`",
            ));
        }
        if self.reference_prefix.is_empty()
            || self.reference_prefix.len() > 8
            || !self
                .reference_prefix
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(ConfigError::invalid(
                "scan.reference_prefix",
                "must be 1 to 8 upper-case letters or digits",
            ));
        }
        for (key, v) in [
            ("tesseract_bin", &self.tesseract_bin),
            ("pdftotext_bin", &self.pdftotext_bin),
            ("pdftoppm_bin", &self.pdftoppm_bin),
            ("pdfinfo_bin", &self.pdfinfo_bin),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError::invalid(format!("scan.{key}"), "is empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            database_url: "sqlite::memory:".into(),
            dossier_url: default_dossier_url(),
            watch_dir: PathBuf::new(),
            poll_interval_ms: 1000,
            stable_ms: 2000,
            max_file_bytes: 1 << 20,
            max_pages: 30,
            min_image_side_px: 600,
            ocr_timeout_ms: 1000,
            ocr_language: "fra".into(),
            render_dpi: 300,
            ocr_max_pixels_per_page: 40_000_000,
            ocr_memory_mb: 1024,
            concurrency: 2,
            reference_prefix: "VIN".into(),
            tesseract_bin: "tesseract".into(),
            pdftotext_bin: "pdftotext".into(),
            pdftoppm_bin: "pdftoppm".into(),
            pdfinfo_bin: "pdfinfo".into(),
        }
    }

    type Breaker = fn(&mut Config);

    #[test]
    fn scan_config_errors_name_the_key() {
        assert!(valid().validate().is_ok());
        let cases: [(&str, Breaker); 8] = [
            ("scan.ocr_max_pixels_per_page", |c| {
                c.ocr_max_pixels_per_page = 0
            }),
            ("scan.ocr_memory_mb", |c| c.ocr_memory_mb = 0),
            ("scan.ocr_memory_mb", |c| c.ocr_memory_mb = u64::MAX),
            ("scan.max_pages", |c| c.max_pages = 0),
            ("scan.render_dpi", |c| c.render_dpi = 2000),
            ("scan.ocr_language", |c| {
                c.ocr_language = "fra; rm -rf /".into()
            }),
            ("scan.reference_prefix", |c| {
                c.reference_prefix = "vin".into()
            }),
            ("scan.tesseract_bin", |c| c.tesseract_bin = " ".into()),
        ];
        for (key, break_it) in cases {
            let mut c = valid();
            break_it(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
