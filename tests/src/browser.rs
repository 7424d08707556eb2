//! A real headless chromium (Debian's `chromium`) driven over WebDriver by `chromedriver`
//! (Debian's `chromium-driver`) through fantoccini: its own port and profile directory,
//! blocking helpers for tests, and everything stopped when it is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{free_loopback_addr, poll_until, require_tool};

/// One browser session.
#[derive(Debug)]
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless chromium session in a fresh
    /// profile; panics naming the tool if either is not installed.
    pub fn start() -> Self {
        let chromedriver = require_tool("chromedriver");
        let chromium = require_tool("chromium");
        let profile = tempfile::Builder::new()
            .prefix("berth-chromium-")
            .tempdir()
            .expect("a profile dir");
        let addr = free_loopback_addr();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        poll_until("chromedriver to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).ok().map(|_| ())
        });
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Root in a VM: chromium's sandbox needs user namespaces it does not get.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&format!("http://{addr}")),
            )
            .expect("a chromium session through chromedriver");
        Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("an open session")
    }

    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// The text of the first element `css` selects, or None when there is none.
    pub fn text(&self, css: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent.trim() : null;",
            json!(css)
        );
        self.js(&script).as_str().map(str::to_string)
    }

    pub fn exists(&self, css: &str) -> bool {
        self.text(css).is_some()
    }

    /// Polls (every 10 ms) until the text of `css` satisfies `check`; returns it and when it
    /// was first seen.
    pub fn wait_text(
        &self,
        what: &str,
        css: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> (String, Instant) {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text(css);
            if let Some(t) = text.as_deref().filter(|t| check(t)) {
                return (t.to_string(), Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {css} shows {text:?} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn click(&self, css: &str) {
        self.rt.block_on(async {
            let element = self
                .client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("find {css}: {e}"));
            element
                .click()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
        });
    }

    pub fn fill(&self, css: &str, value: &str) {
        self.rt.block_on(async {
            let element = self
                .client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("find {css}: {e}"));
            element
                .send_keys(value)
                .await
                .unwrap_or_else(|e| panic!("type into {css}: {e}"));
        });
    }

    /// Saves a PNG of the window as `dir/name.png` and returns its path.
    pub fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self
            .rt
            .block_on(self.client().screenshot())
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        std::fs::create_dir_all(dir).expect("the screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
