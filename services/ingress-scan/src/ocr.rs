//! Text out of a scanned file, page by page, with where each line sits.
//!
//! A PDF's own text layer is used when a page has one (`pdftotext -tsv`);
//! other pages are rendered (`pdftoppm`) and read by Tesseract, as are
//! images (`tesseract … --psm 1 tsv`: page segmentation with orientation
//! and script detection, so a page scanned sideways or upside down is read
//! upright, and a slight skew is absorbed by the line finder). Every tool
//! runs as a child process bounded by a timeout (killed when it expires)
//! and by an address-space limit (`RLIMIT_AS`, set between fork and exec).
//! Before anything is rendered, each page's declared size is held against
//! a pixel budget: a PDF page is rendered at the highest resolution within
//! it (at most the configured one), and a page too large even at
//! [`MIN_RENDER_DPI`] is quarantined without running the renderer.
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
    /// The process ran out of address space under its limit (an allocation
    /// failed, or it could not even map its libraries); the limit, in bytes.
    MemoryLimit(u64),
    Failed(String),
    Spawn(std::io::Error),
}

/// The lowest resolution a page is rendered at to fit the pixel budget:
/// below it a letter's text is too small to read, so such a page (a
/// MediaBox of metres) is quarantined instead.
pub const MIN_RENDER_DPI: u32 = 50;

/// What every tool process is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    /// Address space (`RLIMIT_AS`), bytes.
    pub memory_bytes: u64,
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
    max_pixels: u64,
    limits: Limits,
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
            max_pixels: c.ocr_max_pixels_per_page,
            limits: Limits {
                timeout: Duration::from_millis(c.ocr_timeout_ms),
                memory_bytes: c.ocr_memory_mb.saturating_mul(1 << 20),
            },
        }
    }

    /// These limits with another timeout.
    fn limits(&self, timeout: Duration) -> Limits {
        Limits {
            timeout,
            ..self.limits
        }
    }

    /// Check every program answers (under the memory limit: one too low for
    /// the tools to start is reported here), and that Tesseract has the
    /// language.
    pub async fn check(&self) -> Result<(), String> {
        let limits = self.limits(Duration::from_secs(10));
        for bin in [&self.pdftotext, &self.pdftoppm, &self.pdfinfo] {
            run(bin, &["-v"], limits)
                .await
                .map_err(|e| format!("{bin}: {}", describe(&e)))?;
        }
        let out = run(&self.tesseract, &["--list-langs"], limits)
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
        let timeout = self.limits.timeout * u32::try_from(pages.max(1)).unwrap_or(u32::MAX);
        let p = path.display().to_string();
        let out = run(
            &self.tesseract,
            &[&p, "stdout", "-l", &self.language, "--psm", "1", "tsv"],
            self.limits(timeout),
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
            RunError::MemoryLimit(limit) => memory_quarantine("OCR", limit).into(),
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
        // One call: the page count, and the boxes of the pages we may read
        // (pdfinfo stops at the last page when there are fewer).
        let last = max_pages.to_string();
        let info = run(
            &self.pdfinfo,
            &["-box", "-f", "1", "-l", &last, &p],
            self.limits,
        )
        .await
        .map_err(|e| match e {
            RunError::Spawn(e) => ReadError::Unavailable(format!("{}: {e}", self.pdfinfo)),
            RunError::Failed(stderr) if stderr.to_lowercase().contains("password") => {
                Quarantine::new(Reason::EncryptedPdf, "the PDF needs a password").into()
            }
            RunError::Timeout => Quarantine::new(Reason::Unreadable, "pdfinfo timed out").into(),
            RunError::MemoryLimit(limit) => memory_quarantine("pdfinfo", limit).into(),
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
        let sizes = page_sizes(&info);
        let tsv = run(&self.pdftotext, &["-tsv", &p, "-"], self.limits)
            .await
            .map_err(|e| match e {
                RunError::Spawn(e) => ReadError::Unavailable(format!("{}: {e}", self.pdftotext)),
                RunError::Failed(stderr) if stderr.to_lowercase().contains("password") => {
                    Quarantine::new(Reason::EncryptedPdf, "the PDF needs a password").into()
                }
                RunError::MemoryLimit(limit) => memory_quarantine("pdftotext", limit).into(),
                other => Quarantine::new(
                    Reason::Unreadable,
                    format!("text layer: {}", describe(&other)),
                )
                .into(),
            })?;
        let mut layer = parse_tsv(&String::from_utf8_lossy(&tsv), TextSource::TextLayer);
        // Pages without a text layer, each with the resolution it will be
        // rendered at: all of them checked against the budget before the
        // first is rendered, so a bomb on page 3 costs no OCR of pages 1-2.
        let mut read: Vec<(u32, Option<Page>)> = Vec::new();
        for n in 1..=count {
            match layer.remove(&n) {
                Some(page) if page.char_count() >= 20 => read.push((n, Some(page))),
                _ => read.push((n, None)),
            }
        }
        let mut dpis = BTreeMap::new();
        for (n, _) in read.iter().filter(|(_, page)| page.is_none()) {
            let (w, h) = sizes.get(n).copied().ok_or_else(|| {
                Quarantine::new(
                    Reason::Unreadable,
                    format!("the size of page {n} cannot be read"),
                )
            })?;
            let dpi = budget_dpi(w, h, self.dpi, self.max_pixels).map_err(|pixels| {
                metrics::counter!("guichet_scan_ocr_limit_total", "limit" => "pixel_budget")
                    .increment(1);
                Quarantine::new(
                    Reason::TooLarge,
                    format!(
                        "page {n} is {:.0} × {:.0} inches: {} pixels even at {MIN_RENDER_DPI} dpi, \
                         more than the pixel budget of {} per page (scan.ocr_max_pixels_per_page)",
                        w / 72.0,
                        h / 72.0,
                        pixels,
                        self.max_pixels
                    ),
                )
            })?;
            if dpi < self.dpi {
                metrics::counter!("guichet_scan_ocr_limit_total", "limit" => "render_scaled_down")
                    .increment(1);
                tracing::info!(
                    page = n,
                    dpi,
                    "page rendered below render_dpi to fit the pixel budget"
                );
            }
            dpis.insert(*n, dpi);
        }
        let mut pages = Vec::new();
        for (n, page) in read {
            if let Some(page) = page {
                pages.push(page);
                continue;
            }
            let prefix = work.join(format!("page-{n}"));
            let prefix_s = prefix.display().to_string();
            let dpi = dpis.get(&n).copied().unwrap_or(MIN_RENDER_DPI).to_string();
            let ns = n.to_string();
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
                self.limits,
            )
            .await
            .map_err(|e| match e {
                RunError::Spawn(e) => ReadError::Unavailable(format!("{}: {e}", self.pdftoppm)),
                RunError::Timeout => Quarantine::new(
                    Reason::OcrTimeout,
                    format!("rendering page {n} did not finish in time"),
                )
                .into(),
                RunError::MemoryLimit(limit) => {
                    memory_quarantine(&format!("rendering page {n}"), limit).into()
                }
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
        Ok(pages)
    }
}

/// A tool stopped by the memory limit: the file's own doing (a bomb, or a
/// page beyond what the limit allows), so it is set aside, not retried.
fn memory_quarantine(what: &str, limit: u64) -> Quarantine {
    metrics::counter!("guichet_scan_ocr_limit_total", "limit" => "memory").increment(1);
    Quarantine::new(
        Reason::OcrFailed,
        format!(
            "{what} stopped at the memory limit of {} MiB (scan.ocr_memory_mb)",
            limit >> 20
        ),
    )
}

/// Each page's size in points, from `pdfinfo -box`: the larger of its
/// MediaBox (what pdftoppm renders) and CropBox on each side. A page whose
/// boxes are missing or not finite has no entry.
pub fn page_sizes(info: &str) -> BTreeMap<u32, (f64, f64)> {
    let mut sizes: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [page, n, kind, x0, y0, x1, y1] = f[..] else {
            continue;
        };
        if page != "Page" || !matches!(kind, "MediaBox:" | "CropBox:") {
            continue;
        }
        let Ok(n) = n.parse::<u32>() else { continue };
        let v: Vec<f64> = [x0, y0, x1, y1]
            .iter()
            .filter_map(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .collect();
        let [x0, y0, x1, y1] = v[..] else { continue };
        let (w, h) = ((x1 - x0).abs(), (y1 - y0).abs());
        let e = sizes.entry(n).or_insert((0.0, 0.0));
        *e = (e.0.max(w), e.1.max(h));
    }
    sizes
}

/// Pixels of a `w` × `h`-point page rendered at `dpi` (pdftoppm rounds
/// each side up).
pub fn rendered_pixels(w: f64, h: f64, dpi: u32) -> u64 {
    let side = |pt: f64| (pt * f64::from(dpi) / 72.0).ceil().max(0.0);
    let pixels = side(w) * side(h);
    if pixels >= u64::MAX as f64 {
        u64::MAX
    } else {
        pixels as u64
    }
}

/// The resolution to render a `w` × `h`-point page at so that it stays
/// within `max_pixels`: `dpi` when it fits, else the highest that does.
/// When even [`MIN_RENDER_DPI`] does not fit, the pixels it would take.
pub fn budget_dpi(w: f64, h: f64, dpi: u32, max_pixels: u64) -> Result<u32, u64> {
    if rendered_pixels(w, h, dpi) <= max_pixels {
        return Ok(dpi);
    }
    let area = (w * h).max(f64::MIN_POSITIVE);
    let mut d = (72.0 * (max_pixels as f64 / area).sqrt())
        .floor()
        .clamp(0.0, f64::from(dpi)) as u32;
    while d >= MIN_RENDER_DPI && rendered_pixels(w, h, d) > max_pixels {
        d -= 1;
    }
    if d < MIN_RENDER_DPI {
        Err(rendered_pixels(w, h, MIN_RENDER_DPI))
    } else {
        Ok(d)
    }
}

fn describe(e: &RunError) -> String {
    match e {
        RunError::Timeout => "timed out".into(),
        RunError::MemoryLimit(limit) => format!(
            "stopped at the memory limit of {} MiB (scan.ocr_memory_mb)",
            limit >> 20
        ),
        RunError::Failed(stderr) => format!("failed: {stderr}"),
        RunError::Spawn(e) => format!("cannot start: {e}"),
    }
}

/// Run `bin args…` within `limits` (killed when its time is up); its
/// stdout on success.
pub async fn run(bin: &str, args: &[&str], limits: Limits) -> Result<Vec<u8>, RunError> {
    let mut command = tokio::process::Command::new(bin);
    command
        .args(args)
        // One thread per OCR: concurrency is bounded by the role, and
        // Tesseract's OpenMP threads only fight each other on small machines
        // (and each thread's stack and malloc arena counts against the limit).
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    limit_child(&mut command, limits.memory_bytes);
    let child = command.spawn().map_err(RunError::Spawn)?;
    match tokio::time::timeout(limits.timeout, child.wait_with_output()).await {
        Err(_) => Err(RunError::Timeout),
        Ok(Err(e)) => Err(RunError::Spawn(e)),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Checked whatever the exit status: pdftoppm reports "Out of
            // memory" and still exits 0, with a blank page written.
            if out_of_memory(&stderr) {
                return Err(RunError::MemoryLimit(limits.memory_bytes));
            }
            if out.status.success() {
                return Ok(out.stdout);
            }
            // Tools' messages name files and errors, not content; keep them short.
            let head: String = stderr.lines().take(3).collect::<Vec<_>>().join(" | ");
            let head: String = head.chars().take(300).collect();
            use std::os::unix::process::ExitStatusExt;
            Err(RunError::Failed(match out.status.signal() {
                Some(sig) => format!("stopped by signal {sig} {head}")
                    .trim_end()
                    .to_owned(),
                None => head,
            }))
        }
    }
}

/// What the tools print when an allocation fails under `RLIMIT_AS`: the
/// C++ runtime (`std::bad_alloc`, then abort), Leptonica (`… malloc fail`),
/// poppler (`Out of memory`), glibc's loader (`failed to map segment`) and
/// `strerror(ENOMEM)`.
fn out_of_memory(stderr: &str) -> bool {
    const MARKERS: [&str; 6] = [
        "bad_alloc",
        "malloc fail",
        "calloc fail",
        "out of memory",
        "failed to map segment",
        "cannot allocate memory",
    ];
    let s = stderr.to_lowercase();
    MARKERS.iter().any(|m| s.contains(m))
}

/// Limit the child's address space to `memory_bytes` (never above a hard
/// limit it inherits) and turn off its core dumps (one would hold a page of
/// the letter, and be as large as the limit).
#[allow(unsafe_code)]
fn limit_child(command: &mut tokio::process::Command, memory_bytes: u64) {
    let pre_exec = move || {
        let set = |resource, value: u64| {
            let mut current = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit/setrlimit are plain system calls on a local
            // struct (async-signal-safe, no allocation, no lock).
            if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let value = value.min(current.rlim_max);
            let new = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(resource, &new) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        set(libc::RLIMIT_AS, memory_bytes)?;
        set(libc::RLIMIT_CORE, 0)
    };
    // SAFETY: the closure runs in the forked child before exec; it only
    // makes the system calls above, which are async-signal-safe, and
    // allocates nothing (io::Error::last_os_error does not allocate).
    unsafe {
        command.pre_exec(pre_exec);
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

    /// A one-page PDF of `w` × `h` points holding a black square, with a
    /// correct cross-reference table.
    fn pdf(w: u32, h: u32) -> Vec<u8> {
        let content = "0 g 72 72 144 144 re f";
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
            format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Contents 4 0 R >>"),
            format!(
                "<< /Length {} >>\nstream\n{content}\nendstream",
                content.len()
            ),
        ];
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).bytes());
        }
        let xref = out.len();
        out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
        for o in offsets {
            out.extend(format!("{o:010} 00000 n \n").bytes());
        }
        out.extend(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .bytes(),
        );
        out
    }

    fn tools(memory_mb: u64) -> Tools {
        Tools {
            tesseract: "tesseract".into(),
            pdftotext: "pdftotext".into(),
            pdftoppm: "pdftoppm".into(),
            pdfinfo: "pdfinfo".into(),
            language: "fra".into(),
            dpi: 300,
            max_pixels: 40_000_000,
            limits: Limits {
                timeout: Duration::from_secs(60),
                memory_bytes: memory_mb << 20,
            },
        }
    }

    #[test]
    fn scan_pdf_page_sizes_come_from_pdfinfo_boxes() {
        let info = "Pages:           3\n\
            Page    1 size:  595 x 842 pts (A4)\n\
            Page    1 rot:   0\n\
            Page    1 MediaBox:      0.00     0.00   595.00   842.00\n\
            Page    1 CropBox:       0.00     0.00   595.00   842.00\n\
            Page    1 BleedBox:      0.00     0.00   595.00   842.00\n\
            Page    2 MediaBox:  -7200.00     0.00  7200.00 14400.00\n\
            Page    2 CropBox:       0.00     0.00   612.00   792.00\n\
            Page    3 MediaBox:      nan     0.00   612.00   792.00\n\
            File size:       439 bytes\n";
        let sizes = page_sizes(info);
        assert_eq!(sizes.get(&1), Some(&(595.0, 842.0)));
        // The larger box wins: pdftoppm renders the MediaBox.
        assert_eq!(sizes.get(&2), Some(&(14400.0, 14400.0)));
        assert_eq!(sizes.get(&3), None, "a page of unknown size has none");
    }

    #[test]
    fn scan_render_dpi_is_scaled_to_the_pixel_budget() {
        let budget = 40_000_000;
        // Ordinary pages at the configured resolution are untouched.
        let (a4w, a4h) = (595.0, 842.0);
        assert_eq!(rendered_pixels(a4w, a4h, 300), 2480 * 3509);
        assert_eq!(budget_dpi(a4w, a4h, 300, budget), Ok(300));
        assert_eq!(budget_dpi(a4w, a4h, 600, budget), Ok(600));
        // An A2 poster at 600 dpi (139 Mpx) is rendered lower, within budget,
        // at the highest resolution that fits.
        let (a2w, a2h) = (1191.0, 1684.0);
        let dpi = budget_dpi(a2w, a2h, 600, budget).expect("fits lower");
        assert!((MIN_RENDER_DPI..600).contains(&dpi), "{dpi}");
        assert!(rendered_pixels(a2w, a2h, dpi) <= budget);
        assert!(rendered_pixels(a2w, a2h, dpi + 1) > budget);
        // The probe's 439-byte bomb: 200 × 200 inches (3.6 Gpx at 300 dpi)
        // does not fit even at 50 dpi (100 Mpx).
        assert_eq!(
            budget_dpi(14400.0, 14400.0, 300, budget),
            Err(10_000 * 10_000)
        );
        // Just above the floor still renders; never above the configured dpi.
        let side = 72.0 * (budget as f64).sqrt() / 51.0;
        assert_eq!(budget_dpi(side, side, 300, budget), Ok(50));
        assert_eq!(budget_dpi(1.0, 1.0, 300, budget), Ok(300));
        assert!(budget_dpi(f64::MAX, f64::MAX, 300, budget).is_err());
    }

    #[test]
    fn scan_tool_errors_name_an_exhausted_memory_limit() {
        assert!(out_of_memory(
            "terminate called after throwing an instance of 'std::bad_alloc'"
        ));
        assert!(out_of_memory(
            "Error in pixCreateNoInit: pixdata_malloc fail for data"
        ));
        assert!(out_of_memory("Out of memory\nOut of memory"));
        assert!(out_of_memory(
            "error while loading shared libraries: libLerc.so.4: failed to map segment from shared object"
        ));
        assert!(!out_of_memory("Syntax Error: Couldn't read xref table"));
        assert!(!out_of_memory(""));
    }

    #[tokio::test]
    async fn scan_pdf_bomb_is_quarantined_without_being_rendered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bomb = pdf(14400, 14400);
        assert!(bomb.len() < 500, "a few hundred bytes, as the probe's");
        let path = dir.path().join("bomb.pdf");
        std::fs::write(&path, &bomb).expect("write");
        let err = tools(1024)
            .read_pdf(&path, dir.path(), 30)
            .await
            .unwrap_err();
        let ReadError::Quarantine(q) = err else {
            panic!("{err:?}")
        };
        assert_eq!(q.reason, Reason::TooLarge, "{q:?}");
        assert!(q.detail.contains("pixel budget"), "{q:?}");
        assert!(q.detail.contains("200 × 200 inches"), "{q:?}");
        let files = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(files, 1, "nothing rendered");
    }

    #[tokio::test]
    async fn scan_a_tool_over_its_memory_limit_is_stopped_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a4.pdf");
        std::fs::write(&path, pdf(595, 842)).expect("write");
        let p = path.display().to_string();
        let out = dir.path().join("page").display().to_string();
        let render = |dpi: &'static str, memory_mb: u64| {
            let (p, out) = (p.clone(), out.clone());
            async move {
                let limits = Limits {
                    timeout: Duration::from_secs(60),
                    memory_bytes: memory_mb << 20,
                };
                let args = ["-r", dpi, "-gray", "-png", "-singlefile", &p, &out];
                run("pdftoppm", &args, limits).await
            }
        };
        // Rendered normally under the default limit…
        render("300", 1024)
            .await
            .expect("pdftoppm renders an A4 page");
        // …but at 600 dpi the page alone is 35 MB: pdftoppm, which reports
        // "Out of memory" and exits 0, is caught all the same.
        let err = render("600", 32).await.unwrap_err();
        assert!(
            matches!(err, RunError::MemoryLimit(l) if l == 32 << 20),
            "{err:?}"
        );
        // Tesseract under a limit too small for a 600-dpi page (35 Mpx) ends
        // as a quarantine that says so, not a crash or a retry.
        render("600", 1024).await.expect("render at 600 dpi");
        let png = dir.path().join("page.png");
        let err = tools(100).ocr_image(&png, 1).await.unwrap_err();
        let ReadError::Quarantine(q) = err else {
            panic!("{err:?}")
        };
        assert_eq!(q.reason, Reason::OcrFailed, "{q:?}");
        assert!(q.detail.contains("memory limit of 100 MiB"), "{q:?}");
        // The same page under the default limit is read.
        tools(1024)
            .ocr_image(&png, 1)
            .await
            .expect("OCR within the limit");
    }

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
