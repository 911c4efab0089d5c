//! One file in, its pages of text out, or the reason it is set aside.

use crate::config::Config;
use crate::detect::{Kind, check_pixel_budget, image_pages, sniff};
use crate::ocr::{Page, TextSource, Tools};
use crate::quarantine::{Quarantine, ReadError, Reason};

/// A file read.
#[derive(Debug, Clone)]
pub struct Reading {
    pub kind: Kind,
    pub pages: Vec<Page>,
}

impl Reading {
    /// The recognised text, pages separated by a blank line.
    pub fn text(&self) -> String {
        self.pages
            .iter()
            .map(Page::text)
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// Mean confidence, weighted by the characters of each page.
    pub fn confidence(&self) -> f32 {
        let (mut sum, mut weight) = (0.0f32, 0.0f32);
        for p in &self.pages {
            let w = p.text().chars().filter(|c| !c.is_whitespace()).count() as f32;
            sum += p.confidence * w;
            weight += w;
        }
        if weight > 0.0 { sum / weight } else { 0.0 }
    }

    pub fn text_source(&self) -> &'static str {
        let ocr = self
            .pages
            .iter()
            .filter(|p| p.source == TextSource::Ocr)
            .count();
        match ocr {
            0 => "text_layer",
            n if n == self.pages.len() => "ocr",
            _ => "mixed",
        }
    }
}

/// Read `bytes`: type and structure checks, then text.
pub async fn read(bytes: &[u8], config: &Config, tools: &Tools) -> Result<Reading, ReadError> {
    if bytes.len() as u64 > config.max_file_bytes {
        return Err(Quarantine::new(
            Reason::TooLarge,
            format!(
                "{} bytes, more than the limit of {}",
                bytes.len(),
                config.max_file_bytes
            ),
        )
        .into());
    }
    let kind = sniff(bytes)?;
    let work = tempfile::Builder::new()
        .prefix("guichet-scan-")
        .tempdir()
        .map_err(|e| ReadError::Unavailable(format!("temporary directory: {e}")))?;
    let input = work.path().join(format!("input.{}", kind.extension()));
    tokio::fs::write(&input, bytes)
        .await
        .map_err(|e| ReadError::Unavailable(format!("temporary file: {e}")))?;
    let pages = match kind {
        Kind::Pdf => {
            tools
                .read_pdf(&input, work.path(), config.max_pages)
                .await?
        }
        Kind::Png | Kind::Jpeg | Kind::Tiff => {
            let sizes = image_pages(kind, bytes)?.0;
            if sizes.len() > config.max_pages as usize {
                return Err(Quarantine::new(
                    Reason::TooManyPages,
                    format!(
                        "{} pages, more than the limit of {}",
                        sizes.len(),
                        config.max_pages
                    ),
                )
                .into());
            }
            check_pixel_budget(&sizes, config.ocr_max_pixels_per_page)?;
            let min = config.min_image_side_px;
            if let Some((i, (w, h))) = sizes
                .iter()
                .enumerate()
                .find(|(_, (w, h))| (*w).min(*h) < min)
            {
                return Err(Quarantine::new(
                    Reason::ImageTooSmall,
                    format!(
                        "page {} is {w}×{h} pixels, below the minimum side of {min}",
                        i + 1
                    ),
                )
                .into());
            }
            tools.ocr_image(&input, sizes.len()).await?
        }
    };
    let reading = Reading { kind, pages };
    if reading.text().chars().all(char::is_whitespace) {
        return Err(Quarantine::new(Reason::NoText, "no text was recognised").into());
    }
    Ok(reading)
}
