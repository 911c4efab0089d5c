//! Scanned mail: the scan client, stream reading, and rendering letters to scan.

use crate::*;

impl TestEnv {
    /// Headers and bodies of every message on this test's stream `base`,
    /// once it holds at least `at_least` messages.
    pub async fn stream_messages(
        &self,
        base: &str,
        at_least: usize,
    ) -> Vec<(async_nats::HeaderMap, bytes::Bytes)> {
        let js = async_nats::jetstream::new(self.nats().await);
        let name = self.stream(base);
        eventually(
            &format!("{at_least} messages on {name}"),
            Duration::from_secs(90),
            || {
                let js = js.clone();
                let name = name.clone();
                async move {
                    let mut stream = js.get_stream(name).await.ok()?;
                    let info = stream.info().await.ok()?;
                    if (info.state.messages as usize) < at_least {
                        return None;
                    }
                    let mut out = Vec::new();
                    for seq in info.state.first_sequence..=info.state.last_sequence {
                        if let Ok(m) = stream.get_raw_message(seq).await {
                            out.push((m.headers, m.payload));
                        }
                    }
                    Some(out)
                }
            },
        )
        .await
    }

    /// The scan role's watched folder (`<data_dir>/scan` by default).
    pub fn scan_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("scan")
    }
}

/// Scanned-letter fixtures, rendered at test time by
/// `tests/fixtures/scan/render_letter.py` (Pillow, ReportLab and the DejaVu
/// fonts: Debian python3-pil, python3-reportlab, fonts-dejavu-core, which
/// `scripts/ensure-services.sh test` installs).
use std::path::{Path, PathBuf};

/// One page: `(indent_mm, text)` lines (empty text: a blank line).
#[derive(Debug, Clone)]
pub struct PageSpec {
    pub lines: Vec<(f32, String)>,
    pub rotate: i32,
    pub skew: f32,
    pub noise: f32,
}

impl PageSpec {
    pub fn new(lines: &[(f32, &str)]) -> PageSpec {
        PageSpec {
            lines: lines.iter().map(|(i, t)| (*i, t.to_string())).collect(),
            rotate: 0,
            skew: 0.0,
            noise: 0.0,
        }
    }

    /// The page's text, lines joined by newlines (blank lines dropped).
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn python() -> &'static str {
    // Debian's interpreter carries the apt-installed Pillow and ReportLab
    // even where another python3 comes first on PATH.
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scan/render_letter.py")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Render `pages` to `out` as `format` (png, jpeg, tiff, pdf_image,
/// pdf_text, pdf_encrypted) at `dpi`.
pub fn render(out: &Path, format: &str, dpi: u32, pages: &[PageSpec]) {
    let pages_json: Vec<String> = pages
        .iter()
        .map(|p| {
            let lines: Vec<String> = p
                .lines
                .iter()
                .map(|(i, t)| {
                    if t.is_empty() {
                        "[null, null]".to_owned()
                    } else {
                        format!("[{i}, {}]", escape(t))
                    }
                })
                .collect();
            format!(
                "{{\"lines\": [{}], \"rotate\": {}, \"skew\": {}, \"noise\": {}}}",
                lines.join(", "),
                p.rotate,
                p.skew,
                p.noise
            )
        })
        .collect();
    let spec = format!(
        "{{\"out\": {}, \"format\": {}, \"dpi\": {dpi}, \"pages\": [{}]}}",
        escape(&out.display().to_string()),
        escape(format),
        pages_json.join(", ")
    );
    use std::io::Write;
    let mut child = std::process::Command::new(python())
        .arg(script())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3 (install it, with python3-pil and python3-reportlab)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.as_bytes())
        .expect("write the letter spec");
    let out_ = child.wait_with_output().expect("render letter");
    assert!(
        out_.status.success(),
        "render_letter.py failed (needs python3-pil, python3-reportlab, fonts-dejavu-core; \
         `scripts/ensure-services.sh test` installs them): {}",
        String::from_utf8_lossy(&out_.stderr)
    );
}

/// Put `src` into the watched inbox as a scanner would: written under a
/// `.part` name, then renamed.
pub fn drop_into_inbox(inbox: &Path, src: &Path, name: &str) {
    std::fs::create_dir_all(inbox).expect("inbox");
    let part = inbox.join(format!("{name}.part"));
    std::fs::copy(src, &part).expect("copy into inbox");
    std::fs::rename(&part, inbox.join(name)).expect("rename in inbox");
}

/// Character accuracy of `actual` against `expected`: 1 − edit distance
/// / length, whitespace runs counted as one space.
pub fn char_accuracy(expected: &str, actual: &str) -> f64 {
    let norm = |s: &str| -> Vec<char> {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .collect()
    };
    let (a, b) = (norm(expected), norm(actual));
    if a.is_empty() {
        return if b.is_empty() { 1.0 } else { 0.0 };
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    1.0 - prev[b.len()] as f64 / a.len() as f64
}
