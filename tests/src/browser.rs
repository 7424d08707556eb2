//! A real headless chromium (Debian's `chromium`) driven over WebDriver by `chromedriver`
//! (Debian's `chromium-driver`) through fantoccini: its own port and profile directory (and,
//! if asked, its own HOME and managed policies), blocking helpers for tests, and everything
//! stopped when it is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
pub use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::{free_loopback_addr, poll_until, require_tool};

/// What a session starts with besides a fresh profile.
#[derive(Debug, Default)]
pub struct Launch<'a> {
    /// HOME for chromedriver and chromium: chromium on Linux reads client certificates and the
    /// CAs it trusts from `$HOME/.pki/nssdb` (see [`crate::nssdb`]).
    pub home: Option<&'a Path>,
    /// Managed policies (a JSON object of policy names), as an administrator would put them
    /// in `/etc/chromium/policies/managed/`. Chromium reads policies from nowhere else (its
    /// `--policy` switch is ignored by Debian's build), so this session's chromedriver runs in
    /// a mount namespace of its own where `/etc/chromium` is a copy holding them: no other
    /// browser sees them, and nothing is left behind however the test ends. Needs root.
    pub policies: Option<Value>,
}

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
        Self::launch(&Launch::default())
    }

    /// [`Self::start`] with a HOME and managed policies of the session's own.
    pub fn launch(launch: &Launch) -> Self {
        let chromedriver = require_tool("chromedriver");
        let chromium = require_tool("chromium");
        let profile = tempfile::Builder::new()
            .prefix("berth-chromium-")
            .tempdir()
            .expect("a profile dir");
        let addr = free_loopback_addr();
        let mut command = match &launch.policies {
            None => Command::new(chromedriver),
            Some(policies) => policies_in_own_mount_ns(profile.path(), policies, &chromedriver),
        };
        if let Some(home) = launch.home {
            command.env("HOME", home);
        }
        let driver = command
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
            if Instant::now() >= deadline {
                // Where the browser is and what it shows, to tell a page that never came from
                // one that came without the element.
                let page = self.js("return location.href + ' | ' + document.title + ' | ' \
                     + (document.body ? document.body.innerText.slice(0, 600) : '');");
                panic!("{what}: {css} shows {text:?} after {within:?}; the page: {page}");
            }
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

    /// Presses and releases `key` on the keyboard (WebDriver key actions, as a person types:
    /// the page gets keydown, keypress and keyup, and Tab moves focus as it would).
    pub fn press(&self, key: Key) {
        let key = char::from(key);
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.rt
            .block_on(self.client().perform_actions(actions))
            .unwrap_or_else(|e| panic!("press {key:?}: {e}"));
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

/// A command that runs `chromedriver` in a new mount namespace where `/etc/chromium` is a copy
/// of the real one (made under `scratch`) with `policies` as its only managed policy file.
fn policies_in_own_mount_ns(scratch: &Path, policies: &Value, chromedriver: &Path) -> Command {
    crate::require_root();
    let unshare = require_tool("unshare");
    let etc = scratch.join("etc-chromium");
    let managed = etc.join("policies/managed");
    std::fs::create_dir_all(&managed).expect("a policies dir");
    // The package's own files (master_preferences) stay as they are.
    if let Ok(entries) = std::fs::read_dir("/etc/chromium") {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::copy(entry.path(), etc.join(entry.file_name()))
                    .expect("copy /etc/chromium's files");
            }
        }
    }
    std::fs::write(managed.join("berth-test.json"), policies.to_string())
        .expect("write the policy file");
    let mut command = Command::new(unshare);
    command
        .args(["--mount", "--propagation", "private", "--"])
        .args([
            "sh",
            "-c",
            r#"mount --bind "$1" /etc/chromium && shift && exec "$@""#,
            "sh",
        ])
        .arg(&etc)
        .arg(chromedriver);
    command
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
