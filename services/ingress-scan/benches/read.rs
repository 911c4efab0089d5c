//! How long reading a scanned letter takes, per kind of file: text-layer
//! PDF, 300-dpi PNG, image-only PDF (rendered, then OCR), a page scanned
//! sideways, a two-page G4 TIFF; and the extraction alone.
//!
//!     cargo bench -p guichet-ingress-scan --bench read
//!
//! Needs the scan tools and the fixture renderer's packages (see README,
//! Scanned mail). Figures are printed, never asserted: OCR time depends on
//! the machine (reference: 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use guichet_ingress_scan::config::Config;
use guichet_ingress_scan::ocr::Tools;
use guichet_ingress_scan::{extract, pipeline};

const LETTER: &[(f32, &str)] = &[
    (20.0, "Mme Hélène Lefèvre"),
    (20.0, "12 rue des Écoles"),
    (20.0, "69003 Lyon"),
    (20.0, "Tél. : 06 12 34 56 78"),
    (20.0, "helene.lefevre@example.fr"),
    (0.0, ""),
    (115.0, "Mairie de Villeurbanne"),
    (115.0, "Place Lazare-Goujon"),
    (115.0, "69100 Villeurbanne"),
    (0.0, ""),
    (115.0, "Lyon, le 3 novembre 2026"),
    (0.0, ""),
    (20.0, "Objet : demande de copie d'acte de naissance"),
    (20.0, "Référence du dossier : VIN-2026-000123"),
    (0.0, ""),
    (20.0, "Madame, Monsieur,"),
    (0.0, ""),
    (
        20.0,
        "Je vous prie de bien vouloir me faire parvenir une copie intégrale",
    ),
    (
        20.0,
        "de mon acte de naissance. Je joins à ce courrier une enveloppe",
    ),
    (
        20.0,
        "timbrée à mon adresse. Je vous remercie par avance de votre aide.",
    ),
    (0.0, ""),
    (20.0, "Veuillez agréer mes salutations distinguées."),
];

fn page_json(rotate: i32, skew: f32, noise: f32) -> String {
    let lines: Vec<String> = LETTER
        .iter()
        .map(|(i, t)| {
            if t.is_empty() {
                "[null, null]".into()
            } else {
                format!("[{i}, \"{}\"]", t.replace('"', "\\\""))
            }
        })
        .collect();
    format!(
        "{{\"lines\": [{}], \"rotate\": {rotate}, \"skew\": {skew}, \"noise\": {noise}}}",
        lines.join(", ")
    )
}

fn render(out: &Path, format: &str, pages: &[String]) -> Vec<u8> {
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scan/render_letter.py");
    let spec = format!(
        "{{\"out\": \"{}\", \"format\": \"{format}\", \"dpi\": 300, \"pages\": [{}]}}",
        out.display(),
        pages.join(", ")
    );
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "render_letter.py failed");
    std::fs::read(out).unwrap()
}

fn config() -> Config {
    Config {
        database_url: "sqlite::memory:".into(),
        dossier_url: String::new(),
        watch_dir: Default::default(),
        poll_interval_ms: 1000,
        stable_ms: 2000,
        max_file_bytes: 50 << 20,
        max_pages: 30,
        min_image_side_px: 600,
        ocr_timeout_ms: 120_000,
        ocr_language: "fra".into(),
        render_dpi: 300,
        ocr_max_pixels_per_page: 40_000_000,
        ocr_memory_mb: 1024,
        concurrency: 1,
        reference_prefix: "VIN".into(),
        tesseract_bin: "tesseract".into(),
        pdftotext_bin: "pdftotext".into(),
        pdftoppm_bin: "pdftoppm".into(),
        pdfinfo_bin: "pdfinfo".into(),
    }
}

fn report(what: &str, pages: usize, mut times: Vec<Duration>) {
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{what:<32} pages {pages}  median {:>8.1} ms  min {:>8.1} ms  ({:.2} pages/s, {} runs)",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        pages as f64 / median.as_secs_f64(),
        times.len()
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = config();
    let tools = Tools::new(&config);
    tools.check().await.expect("scan tools installed");
    let upright = page_json(0, 0.0, 0.0);
    let cases = [
        ("text-layer PDF", "pdf_text", vec![upright.clone()]),
        ("PNG 300 dpi", "png", vec![upright.clone()]),
        (
            "image-only PDF, skew + noise",
            "pdf_image",
            vec![page_json(0, 1.5, 0.003)],
        ),
        ("PNG scanned sideways", "png", vec![page_json(90, 0.0, 0.0)]),
        (
            "TIFF G4, 2 pages",
            "tiff",
            vec![upright.clone(), upright.clone()],
        ),
    ];
    let runs = 3;
    let mut last = None;
    for (what, format, pages) in cases {
        let bytes = render(&dir.path().join(format!("bench.{format}")), format, &pages);
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let reading = pipeline::read(&bytes, &config, &tools)
                .await
                .unwrap_or_else(|_| panic!("{what} read"));
            times.push(t.elapsed());
            last = Some(reading);
        }
        report(what, pages.len(), times);
    }
    let reading = last.unwrap();
    let t = Instant::now();
    let n = 1000;
    for _ in 0..n {
        std::hint::black_box(extract::extract(&reading.pages));
    }
    println!(
        "{:<32} {:>8.1} µs per letter",
        "extraction alone",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}
