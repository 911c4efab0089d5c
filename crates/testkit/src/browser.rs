//! A real browser for page tests: Debian's headless `chromium` driven over
//! WebDriver (`chromedriver`), with axe-core (vendored under
//! `tests/fixtures/axe/`) run on every page and a screenshot of each kept
//! under `target/screenshots/`.
//!
//! Without chromium or chromedriver a test prints a notice and returns,
//! unless `GUICHET_TEST_REQUIRE_BROWSER=1` (CI sets it) makes that a
//! failure. The README's test command installs both.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub use fantoccini;

const CHROMIUM: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const DRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

/// One browser session and the chromedriver behind it.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    /// Where page screenshots go.
    pub shots: PathBuf,
}

fn first_existing(paths: &[&str]) -> Option<String> {
    paths
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| (*p).to_owned())
}

/// Where screenshots are kept (`target/screenshots`).
pub fn screenshots_dir() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).ok();
    dir
}

impl Browser {
    /// Start chromedriver and a headless chromium; `None` (with a notice)
    /// when they are not installed.
    pub async fn start() -> Option<Browser> {
        Browser::launch(true).await
    }

    /// The same, with JavaScript turned off in the browser: for the flows
    /// that must work without it.
    pub async fn start_without_javascript() -> Option<Browser> {
        Browser::launch(false).await
    }

    async fn launch(javascript: bool) -> Option<Browser> {
        let (Some(chromium), Some(driver)) = (first_existing(CHROMIUM), first_existing(DRIVER))
        else {
            if std::env::var("GUICHET_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!("chromium and chromedriver are required (GUICHET_TEST_REQUIRE_BROWSER=1)");
            }
            eprintln!("NOTICE: chromium or chromedriver not installed: skipping this browser test");
            return None;
        };
        let port = crate::free_port();
        let driver = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--lang=fr-FR"],
                "prefs": { "profile.managed_default_content_settings.javascript": if javascript { 1 } else { 2 } },
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Some(Browser {
                        client,
                        driver,
                        shots: screenshots_dir(),
                    });
                }
                Err(e) => {
                    last = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("chromedriver did not start a session: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    pub async fn current_path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        path
    }

    /// The page's visible text (empty while a page is being replaced).
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Fill the field with id `id`.
    pub async fn fill(&self, id: &str, value: &str) {
        let el = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("field #{id}: {e}"));
        el.clear().await.ok();
        el.send_keys(value).await.expect("type");
    }

    /// Click the first button or link whose text contains `label`.
    pub async fn click_text(&self, label: &str) {
        let xpath = format!(
            "//*[(self::button or self::a) and contains(normalize-space(.), {})]",
            xpath_literal(label)
        );
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button or link `{label}`: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Wait until the page's text contains `needle` (live updates).
    pub async fn wait_text(&self, needle: &str, timeout: Duration) -> String {
        let start = std::time::Instant::now();
        loop {
            let text = self.text().await;
            if text.contains(needle) {
                return text;
            }
            if start.elapsed() > timeout {
                panic!("`{needle}` never appeared on the page; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Run axe-core (WCAG 2.1 A/AA) on the current page, keep a screenshot
    /// as `<name>.png`, and fail on any serious or critical violation.
    pub async fn check_page(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("save screenshot");
        let axe = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/axe/axe-4.14.1.min.js"),
        )
        .expect("vendored axe-core");
        // Evaluated by the driver, so the page's strict CSP stays as is.
        self.client
            .execute(&format!("{axe}\nreturn true;"), vec![])
            .await
            .expect("inject axe-core");
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
                    .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5) }))))
                    .catch(e => done([{ id: 'axe-error', impact: 'critical', help: String(e), nodes: [] }]));",
                vec![],
            )
            .await
            .expect("run axe-core");
        let bad: Vec<&Value> = result
            .as_array()
            .expect("violations")
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            bad.is_empty(),
            "page `{name}` has serious or critical accessibility violations: {}",
            serde_json::to_string_pretty(&bad).unwrap_or_default()
        );
    }

    /// Press keys on the focused element (`\u{E004}` Tab, `\u{E007}` Enter).
    pub async fn keys(&self, keys: &str) {
        let active = self.client.active_element().await.expect("focused element");
        active.send_keys(keys).await.expect("keys");
    }

    /// The focused element's text (or value), trimmed.
    pub async fn focused_text(&self) -> String {
        let v = self
            .client
            .execute(
                "const e = document.activeElement; return e ? (e.innerText || e.value || '').trim() : '';",
                vec![],
            )
            .await
            .expect("active element");
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The session cookie's value, for requests made outside the browser.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.client
            .get_named_cookie(name)
            .await
            .ok()
            .map(|c| c.value().to_owned())
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

/// `s` as an XPath string literal.
fn xpath_literal(s: &str) -> String {
    if !s.contains('\'') {
        format!("'{s}'")
    } else if !s.contains('"') {
        format!("\"{s}\"")
    } else {
        let parts: Vec<String> = s.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}
