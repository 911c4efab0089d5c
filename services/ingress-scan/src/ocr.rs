//! Text out of a scanned file, page by page, with where each line sits.
//!
//! A PDF's own text layer is used when a page has one (`pdftotext -tsv`);
//! other pages are rendered (`pdftoppm`) and read by Tesseract, as are
//! images (`tesseract … --psm 1 tsv`: page segmentation with orientation
//! and script detection, so a page scanned sideways or upside down is read
//! upright, and a slight skew is absorbed by the line finder). Every tool
//! runs as a child process bounded by a timeout and killed when it expires.
//!
//! Both tools write the same TSV (level, page, block, paragraph, line, word,
//! box, confidence, text). Tesseract reports boxes in the scanned image's
//! frame, so for a rotated page the reading direction is inferred from the
//! order of words along their lines and boxes are turned back upright:
//! extraction can then tell the sender block (top left) from the recipient
//! block (right).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::quarantine::{Quarantine, ReadError, Reason};

/// One line of text on an upright page.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    /// Left edge as a fraction of the page width (0 = left edge).
    pub indent: f32,
    /// Top edge, in the page's own units (pixels or points), upright.
    pub top: f32,
    /// Typical height of its words, same units.
    pub height: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSource {
    TextLayer,
    Ocr,
}

/// One page of text, lines in reading order (top to bottom, left to right).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub lines: Vec<Line>,
    /// 0 to 1 (1 for a text layer).
    pub confidence: f32,
    pub source: TextSource,
}

impl Page {
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn char_count(&self) -> usize {
        self.lines
            .iter()
            .map(|l| l.text.chars().filter(|c| !c.is_whitespace()).count())
            .sum()
    }
}

/// Why a tool run failed.
#[derive(Debug)]
pub enum RunError {
    Timeout,
    Failed(String),
    Spawn(std::io::Error),
}

/// The external programs and their limits.
#[derive(Debug, Clone)]
pub struct Tools {
    tesseract: String,
    pdftotext: String,
    pdftoppm: String,
    pdfinfo: String,
    language: String,
    dpi: u32,
    timeout: Duration,
}

impl Tools {
    pub fn new(c: &Config) -> Tools {
        Tools {
            tesseract: c.tesseract_bin.clone(),
            pdftotext: c.pdftotext_bin.clone(),
            pdftoppm: c.pdftoppm_bin.clone(),
            pdfinfo: c.pdfinfo_bin.clone(),
            language: c.ocr_language.clone(),
            dpi: c.render_dpi,
            timeout: Duration::from_millis(c.ocr_timeout_ms),
        }
    }

    /// Check every program answers, and that Tesseract has the language.
    pub async fn check(&self) -> Result<(), String> {
        for bin in [&self.pdftotext, &self.pdftoppm, &self.pdfinfo] {
            run(bin, &["-v"], Duration::from_secs(10))
                .await
                .map_err(|e| format!("{bin}: {}", describe(&e)))?;
        }
        let out = run(&self.tesseract, &["--list-langs"], Duration::from_secs(10))
            .await
            .map_err(|e| format!("{}: {}", self.tesseract, describe(&e)))?;
        let langs = String::from_utf8_lossy(&out);
        for lang in self.language.split('+').chain(["osd"]) {
            if !langs.lines().any(|l| l.trim() == lang) {
                return Err(format!(
                    "tesseract has no `{lang}` language data (install tesseract-ocr-{lang})"
                ));
            }
        }
        Ok(())
    }

    /// OCR an image file (all its pages); `pages` bounds the time allowed.
    pub async fn ocr_image(&self, path: &Path, pages: usize) -> Result<Vec<Page>, ReadError> {
        let started = Instant::now();
        let timeout = self.timeout * u32::try_from(pages.max(1)).unwrap_or(u32::MAX);
        let p = path.display().to_string();
        let out = run(
            &self.tesseract,
            &[&p, "stdout", "-l", &self.language, "--psm", "1", "tsv"],
            timeout,
        )
        .await;
        metrics::histogram!("guichet_scan_ocr_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let out = out.map_err(|e| match e {
            RunError::Spawn(e) => ReadError::Unavailable(format!("{}: {e}", self.tesseract)),
            RunError::Timeout => ReadError::from(Quarantine::new(
                Reason::OcrTimeout,
                format!("OCR did not finish within {} ms", timeout.as_millis()),
            )),
            RunError::Failed(stderr) if stderr.contains("read") || stderr.contains("pix") => {
                Quarantine::new(Reason::Unreadable, "the image cannot be decoded").into()
            }
            other => Quarantine::new(Reason::OcrFailed, describe(&other)).into(),
        })?;
        Ok(parse_tsv(&String::from_utf8_lossy(&out), TextSource::Ocr)
            .into_values()
            .collect())
    }

    /// Pages of a PDF: its text layer where it has one, OCR elsewhere.
    pub async fn read_pdf(
        &self,
        path: &Path,
        work: &Path,
        max_pages: u32,
    ) -> Result<Vec<Page>, ReadError> {
        let p = path.display().to_string();
        let info = run(&self.pdfinfo, &[&p], self.timeout)
            .await
            .map_err(|e| match e {
                RunError::Spawn(e) => ReadError::Unavailable(format!("{}: {e}", self.pdfinfo)),
                RunError::Failed(stderr) if stderr.to_lowercase().contains("password") => {
                    Quarantine::new(Reason::EncryptedPdf, "the PDF needs a password").into()
                }
                RunError::Timeout => {
                    Quarantine::new(Reason::Unreadable, "pdfinfo timed out").into()
                }
                RunError::Failed(_) => {
                    Quarantine::new(Reason::Unreadable, "the PDF cannot be parsed").into()
                }
            })?;
        let info = String::from_utf8_lossy(&info);
        let count: u32 = info
            .lines()
            .find_map(|l| l.strip_prefix("Pages:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Quarantine::new(Reason::Unreadable, "the PDF has no page count"))?;
        if count == 0 {
            return Err(Quarantine::new(Reason::Unreadable, "the PDF has no pages").into());
        }
        if count > max_pages {
            return Err(Quarantine::new(
                Reason::TooManyPages,
                format!("{count} pages, more than the limit of {max_pages}"),
            )
            .into());
        }
        let tsv = run(&self.pdftotext, &["-tsv", &p, "-"], self.timeout)
            .await
            .map_err(|e| match e {
                RunError::Spawn(e) => ReadError::Unavailable(format!("{}: {e}", self.pdftotext)),
                RunError::Failed(stderr) if stderr.to_lowercase().contains("password") => {
                    Quarantine::new(Reason::EncryptedPdf, "the PDF needs a password").into()
                }
                other => Quarantine::new(
                    Reason::Unreadable,
                    format!("text layer: {}", describe(&other)),
                )
                .into(),
            })?;
        let mut layer = parse_tsv(&String::from_utf8_lossy(&tsv), TextSource::TextLayer);
        let mut pages = Vec::new();
        for n in 1..=count {
            match layer.remove(&n) {
                Some(page) if page.char_count() >= 20 => pages.push(page),
                _ => {
                    let prefix = work.join(format!("page-{n}"));
                    let prefix_s = prefix.display().to_string();
                    let (dpi, ns) = (self.dpi.to_string(), n.to_string());
                    run(
                        &self.pdftoppm,
                        &[
                            "-r",
                            &dpi,
                            "-gray",
                            "-png",
                            "-f",
                            &ns,
                            "-l",
                            &ns,
                            "-singlefile",
                            &p,
                            &prefix_s,
                        ],
                        self.timeout,
                    )
                    .await
                    .map_err(|e| match e {
                        RunError::Spawn(e) => {
                            ReadError::Unavailable(format!("{}: {e}", self.pdftoppm))
                        }
                        RunError::Timeout => Quarantine::new(
                            Reason::OcrTimeout,
                            format!("rendering page {n} did not finish in time"),
                        )
                        .into(),
                        other => Quarantine::new(
                            Reason::Unreadable,
                            format!("page {n} cannot be rendered: {}", describe(&other)),
                        )
                        .into(),
                    })?;
                    let png = work.join(format!("page-{n}.png"));
                    let mut ocr = self.ocr_image(&png, 1).await?;
                    let _ = tokio::fs::remove_file(&png).await;
                    pages.push(ocr.pop().unwrap_or(Page {
                        lines: vec![],
                        confidence: 0.0,
                        source: TextSource::Ocr,
                    }));
                }
            }
        }
        Ok(pages)
    }
}

fn describe(e: &RunError) -> String {
    match e {
        RunError::Timeout => "timed out".into(),
        RunError::Failed(stderr) => format!("failed: {stderr}"),
        RunError::Spawn(e) => format!("cannot start: {e}"),
    }
}

/// Run `bin args…`, killing it after `timeout`; its stdout on success.
pub async fn run(bin: &str, args: &[&str], timeout: Duration) -> Result<Vec<u8>, RunError> {
    let child = tokio::process::Command::new(bin)
        .args(args)
        // One thread per OCR: concurrency is bounded by the role, and
        // Tesseract's OpenMP threads only fight each other on small machines.
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(RunError::Spawn)?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(RunError::Timeout),
        Ok(Err(e)) => Err(RunError::Spawn(e)),
        Ok(Ok(out)) if out.status.success() => Ok(out.stdout),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Tools' messages name files and errors, not content; keep them short.
            let head: String = stderr.lines().take(3).collect::<Vec<_>>().join(" | ");
            Err(RunError::Failed(head.chars().take(300).collect()))
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct WordBox {
    left: f32,
    top: f32,
    width: f32,
    height: f32,
}

/// Pages of a TSV from Tesseract or pdftotext, keyed by page number.
pub fn parse_tsv(tsv: &str, source: TextSource) -> BTreeMap<u32, Page> {
    type LineKey = (u32, u32, u32);
    struct RawPage {
        size: (f32, f32),
        lines: BTreeMap<LineKey, Vec<(WordBox, f32, String)>>,
    }
    let mut pages: BTreeMap<u32, RawPage> = BTreeMap::new();
    for row in tsv.lines().skip(1) {
        let f: Vec<&str> = row.split('\t').collect();
        if f.len() < 12 {
            continue;
        }
        let num = |i: usize| f[i].trim().parse::<f32>().unwrap_or(0.0);
        let int = |i: usize| f[i].trim().parse::<u32>().unwrap_or(0);
        let level = int(0);
        let page = int(1);
        let entry = pages.entry(page).or_insert_with(|| RawPage {
            size: (0.0, 0.0),
            lines: BTreeMap::new(),
        });
        if level == 1 {
            entry.size = (num(8), num(9));
        }
        let text = f[11..].join("\t");
        let text = text.trim();
        if level != 5 || text.is_empty() || text.starts_with("###") {
            continue;
        }
        let b = WordBox {
            left: num(6),
            top: num(7),
            width: num(8),
            height: num(9),
        };
        entry
            .lines
            .entry((int(2), int(3), int(4)))
            .or_default()
            .push((b, num(10), text.to_owned()));
    }
    pages
        .into_iter()
        .map(|(n, raw)| {
            let (w, h) = raw.size;
            let dir = reading_direction(raw.lines.values());
            let mut lines = Vec::new();
            let (mut conf_sum, mut conf_weight) = (0.0f32, 0.0f32);
            for words in raw.lines.values() {
                let mut upright: Vec<(f32, f32, f32, &str)> = words
                    .iter()
                    .map(|(b, conf, text)| {
                        if *conf >= 0.0 {
                            let weight = text.chars().count() as f32;
                            conf_sum += conf * weight;
                            conf_weight += weight;
                        }
                        let (u, v, vh) = dir.upright(*b, w, h);
                        (u, v, vh, text.as_str())
                    })
                    .collect();
                upright.sort_by(|a, b| a.0.total_cmp(&b.0));
                let width = dir.width(w, h).max(1.0);
                let mut heights: Vec<f32> = upright.iter().map(|x| x.2).collect();
                heights.sort_by(f32::total_cmp);
                lines.push(Line {
                    text: upright.iter().map(|x| x.3).collect::<Vec<_>>().join(" "),
                    indent: (upright[0].0 / width).clamp(0.0, 1.0),
                    top: upright.iter().map(|x| x.1).fold(f32::MAX, f32::min),
                    height: heights[heights.len() / 2],
                });
            }
            let lines = reading_order(lines);
            let confidence = match source {
                TextSource::TextLayer => 1.0,
                TextSource::Ocr if conf_weight > 0.0 => {
                    (conf_sum / conf_weight / 100.0).clamp(0.0, 1.0)
                }
                TextSource::Ocr => 0.0,
            };
            (
                n,
                Page {
                    lines,
                    confidence,
                    source,
                },
            )
        })
        .collect()
}

/// Top to bottom; lines sharing a row (tops within half a line height of
/// the row's first line), left to right. Built in two passes so every sort
/// is a total order.
fn reading_order(mut lines: Vec<Line>) -> Vec<Line> {
    lines.sort_by(|a, b| a.top.total_cmp(&b.top));
    let mut out: Vec<Line> = Vec::with_capacity(lines.len());
    let mut row: Vec<Line> = Vec::new();
    for line in lines {
        if let Some(first) = row.first()
            && line.top - first.top >= first.height.max(line.height) * 0.5
        {
            row.sort_by(|a, b| a.indent.total_cmp(&b.indent));
            out.append(&mut row);
        }
        row.push(line);
    }
    row.sort_by(|a, b| a.indent.total_cmp(&b.indent));
    out.append(&mut row);
    out
}

/// Which way the text runs in the image: towards +x (upright), +y (page
/// turned a quarter clockwise), −y, or −x (upside down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    East,
    South,
    North,
    West,
}

fn reading_direction<'a>(
    lines: impl Iterator<Item = &'a Vec<(WordBox, f32, String)>>,
) -> Direction {
    let mut votes = [0usize; 4];
    for words in lines {
        for pair in words.windows(2) {
            let (a, b) = (pair[0].0, pair[1].0);
            let dx = (b.left + b.width / 2.0) - (a.left + a.width / 2.0);
            let dy = (b.top + b.height / 2.0) - (a.top + a.height / 2.0);
            let d = if dx.abs() >= dy.abs() {
                if dx >= 0.0 { 0 } else { 3 }
            } else if dy >= 0.0 {
                1
            } else {
                2
            };
            votes[d] += 1;
        }
    }
    let best = (0..4)
        .max_by_key(|&i| (votes[i], usize::from(i == 0)))
        .unwrap_or(0);
    [
        Direction::East,
        Direction::South,
        Direction::North,
        Direction::West,
    ][best]
}

impl Direction {
    /// (position along the line, position down the page, line height) upright.
    fn upright(self, b: WordBox, w: f32, h: f32) -> (f32, f32, f32) {
        match self {
            Direction::East => (b.left, b.top, b.height),
            Direction::West => (w - (b.left + b.width), h - (b.top + b.height), b.height),
            Direction::South => (b.top, w - (b.left + b.width), b.width),
            Direction::North => (h - (b.top + b.height), b.left, b.width),
        }
    }

    fn width(self, w: f32, h: f32) -> f32 {
        match self {
            Direction::East | Direction::West => w,
            Direction::South | Direction::North => h,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n";

    #[test]
    fn scan_tsv_lines_come_upright_from_a_page_turned_sideways() {
        // A page scanned a quarter turn: words run up the image (y decreasing).
        let tsv = format!(
            "{HEADER}1\t1\t0\t0\t0\t0\t0\t0\t3508\t2480\t-1\t\n\
             5\t1\t1\t1\t1\t1\t265\t2159\t35\t114\t96\tMme\n\
             5\t1\t1\t1\t1\t2\t259\t1979\t39\t161\t90\tHélène\n\
             5\t1\t1\t2\t1\t1\t341\t2219\t36\t49\t96\t12\n\
             5\t1\t1\t2\t1\t2\t349\t2123\t27\t76\t96\true\n\
             5\t1\t2\t1\t1\t1\t420\t800\t36\t100\t96\tMairie\n"
        );
        let pages = parse_tsv(&tsv, TextSource::Ocr);
        let page = &pages[&1];
        let texts: Vec<&str> = page.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["Mme Hélène", "12 rue", "Mairie"]);
        assert!(page.lines[0].indent < 0.3, "{:?}", page.lines[0]);
        assert!(page.lines[2].indent > 0.4, "{:?}", page.lines[2]);
        assert!(page.confidence > 0.9);
    }

    #[test]
    fn scan_lines_sharing_a_row_read_left_to_right_whatever_their_order() {
        let l = |text: &str, indent: f32, top: f32| Line {
            text: text.into(),
            indent,
            top,
            height: 40.0,
        };
        let lines = vec![
            l("Lyon, le 3 novembre 2026", 0.55, 305.0),
            l("Objet : demande", 0.1, 400.0),
            l("69003 Lyon", 0.1, 300.0),
            l("Mme Hélène Lefèvre", 0.1, 100.0),
            l("bruit", f32::NAN, 102.0),
        ];
        let texts: Vec<String> = reading_order(lines).into_iter().map(|l| l.text).collect();
        assert_eq!(
            texts,
            [
                "Mme Hélène Lefèvre",
                "bruit",
                "69003 Lyon",
                "Lyon, le 3 novembre 2026",
                "Objet : demande"
            ]
        );
    }
}
