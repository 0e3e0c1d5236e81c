//! Real headless Chromium for end-to-end tests, driven over WebDriver by Debian's chromedriver.
//!
//! - [`Chromedriver`] starts `/usr/bin/chromedriver` on a free port; one driver hosts any number
//!   of browsers at once.
//! - [`Profile`] is a browser profile: a fresh `--user-data-dir` that outlives the browsers using
//!   it, so a test can close a browser and start it again on the same `localStorage`.
//! - [`Browser`] is one running Chromium: navigate, run (async) scripts, wait for a condition with
//!   a deadline, take screenshots into `tests/artifacts/`, go offline and online.
//! - [`NetLink`] is a TCP proxy standing for one device's network path to a server. Chromium's
//!   offline emulation fails new requests and flips `navigator.onLine`, but keeps open WebSockets
//!   open (seen with Chromium 156); a link cuts them, as a real network loss does.
//! - [`StaticSite`] serves directories (the wasm package, test pages) on a random port.
//!
//! ```ignore
//! let site = StaticSite::serve(&[("/pkg", pkg_dir), ("/", pages_dir)]).await?;
//! let link = NetLink::start(site.addr()).await?;
//! let driver = Chromedriver::start().await?;
//! let browser = driver.launch(&Profile::new("device-a")?).await?;
//! browser.route_through(&link);
//! browser.goto(&link.url("/app.html")).await?;
//! browser.wait_for("window.app?.ready", Duration::from_secs(10)).await?;
//! browser.set_offline(true).await?; // navigator.onLine false, requests fail, sockets cut
//! browser.close().await?;
//! ```
//!
//! Cleanup is automatic: a dropped [`Browser`] ends its WebDriver session (Chromium quits), a
//! dropped [`Chromedriver`] kills its process group, a dropped [`Profile`] deletes its directory.
//! Prefer the async [`Browser::close`] in tests; the drop path blocks briefly.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Where chromedriver is unless `LEARNSYNC_CHROMEDRIVER` says otherwise (Debian's
/// `chromium-driver`).
pub const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Where Chromium is unless `LEARNSYNC_CHROMIUM` says otherwise (Debian's `chromium`).
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// The flags every browser starts with (besides its `--user-data-dir`). Headless as root needs
/// `--no-sandbox`; the `--disable-*` networking flags keep Chromium from calling home, which this
/// machine's closed network refuses, many connections at a time.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--password-store=basic",
    "--window-size=1280,900",
];

/// The key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How often [`Browser::wait_for`] evaluates its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Upper bound for one WebDriver command (a new session starts a browser: seconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long chromedriver may take to answer `/status` after starting.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

const SETUP_HINT: &str =
    "run scripts/setup-system.sh (installs Debian's chromium and chromium-driver)";

/// `tests/artifacts/` (git-ignored), created on first use: screenshots and other evidence tests
/// leave behind.
pub fn artifacts_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn binary(var: &str, default: &str) -> Result<PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        bail!("{} not found: {SETUP_HINT} (or set {var})", path.display())
    }
}

/// A running chromedriver. Cheap to clone; the process ends when the last clone and the last
/// [`Browser`] started from it are dropped.
#[derive(Clone)]
pub struct Chromedriver {
    driver: Arc<Driver>,
}

struct Driver {
    base: String,
    addr: SocketAddr,
    chromium: PathBuf,
    http: reqwest::Client,
    child: Mutex<Child>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
    sessions: Mutex<HashSet<String>>,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until it accepts sessions. Fails with
    /// instructions when chromedriver or Chromium is not installed.
    pub async fn start() -> Result<Self> {
        let chromedriver = binary("LEARNSYNC_CHROMEDRIVER", DEFAULT_CHROMEDRIVER)?;
        let chromium = binary("LEARNSYNC_CHROMIUM", DEFAULT_CHROMIUM)?;
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .context("building the WebDriver HTTP client")?;
        let mut last_error = anyhow!("chromedriver did not start");
        // The free port is only free when we look; another process may take it before
        // chromedriver binds it. Try a few ports before giving up.
        for _ in 0..3 {
            match Driver::spawn(&chromedriver, &chromium, http.clone()).await {
                Ok(driver) => {
                    return Ok(Self {
                        driver: Arc::new(driver),
                    });
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Starts a browser on `profile`. A profile serves one browser at a time (Chromium locks
    /// its directory); close the previous one first.
    pub async fn launch(&self, profile: &Profile) -> Result<Browser> {
        if profile.inner.in_use.swap(true, Ordering::SeqCst) {
            bail!(
                "profile {:?} is already used by a running browser",
                profile.name()
            );
        }
        let launched = self.new_session(profile).await;
        if launched.is_err() {
            profile.inner.in_use.store(false, Ordering::SeqCst);
        }
        let session = launched?;
        Ok(Browser {
            driver: Arc::clone(&self.driver),
            session,
            profile: profile.clone(),
            links: Mutex::new(Vec::new()),
            console: Mutex::new(Vec::new()),
            closed: false,
        })
    }

    /// Starts a browser on a new, empty profile named `name` (the name shows in screenshots'
    /// file names and in errors).
    pub async fn launch_new(&self, name: &str) -> Result<Browser> {
        self.launch(&Profile::new(name)?).await
    }

    async fn new_session(&self, profile: &Profile) -> Result<String> {
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let body = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": self.driver.chromium,
                    "args": args,
                },
                "goog:loggingPrefs": { "browser": "ALL" },
                "timeouts": { "script": COMMAND_TIMEOUT.as_millis() as u64, "pageLoad": 30_000, "implicit": 0 },
                "unhandledPromptBehavior": "dismiss",
            }}
        });
        let url = format!("{}/session", self.driver.base);
        let value = self
            .driver
            .request(reqwest::Method::POST, &url, Some(&body))
            .await
            .with_context(|| {
                format!(
                    "starting Chromium for profile {:?}\n--- chromedriver log (tail) ---\n{}",
                    profile.name(),
                    self.driver.log_tail()
                )
            })?;
        let session = value
            .get("sessionId")
            .and_then(Value::as_str)
            .with_context(|| format!("no sessionId in new-session answer {value}"))?
            .to_string();
        lock(&self.driver.sessions).insert(session.clone());
        Ok(session)
    }
}

impl Driver {
    async fn spawn(chromedriver: &Path, chromium: &Path, http: reqwest::Client) -> Result<Self> {
        let port = free_port()?;
        let log_dir = tempfile::Builder::new()
            .prefix("learnsync-chromedriver-")
            .tempdir()?;
        let log = log_dir.path().join("chromedriver.log");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that dropping the driver can end Chromium too even if
            // a session was never closed: chromedriver itself leaves browsers running when it
            // is terminated.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}: {SETUP_HINT}", chromedriver.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Driver {
            base: format!("http://{addr}"),
            addr,
            chromium: chromium.to_path_buf(),
            http,
            child: Mutex::new(child),
            log,
            _log_dir: log_dir,
            sessions: Mutex::new(HashSet::new()),
        };
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = lock(&driver.child).try_wait() {
                bail!(
                    "chromedriver exited at start ({status})\n--- chromedriver log ---\n{}",
                    driver.log_tail()
                );
            }
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(resp) = ready
                && let Ok(status) = resp.json::<Value>().await
                && status.pointer("/value/ready") == Some(&Value::Bool(true))
            {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver on port {port} not ready within {DRIVER_START_TIMEOUT:?}\n--- chromedriver log ---\n{}",
                    driver.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One WebDriver command; the answer's `value`, or an error carrying WebDriver's
    /// `error`/`message`.
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(body);
        } else if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}: chromedriver unreachable"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let parsed: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: answer is not JSON: {text}"))?;
        let value = parsed.get("value").cloned().unwrap_or(Value::Null);
        if !status.is_success() || value.get("error").is_some_and(Value::is_string) {
            let error = value.get("error").and_then(Value::as_str).unwrap_or("?");
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or(&text);
            bail!("{method} {url}: {status} {error}: {message}");
        }
        Ok(value)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Ends a session without an async runtime (used from `Drop`): a plain HTTP/1.1 DELETE.
    fn delete_session_blocking(&self, session: &str) {
        let Ok(mut stream) = StdTcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
        else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let request = format!(
            "DELETE /session/{session} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            // Chromedriver answers once Chromium has quit; wait for that.
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
        lock(&self.sessions).remove(session);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let sessions: Vec<String> = lock(&self.sessions).iter().cloned().collect();
        for session in sessions {
            self.delete_session_blocking(&session);
        }
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        // SIGKILL the whole group: chromedriver and anything of Chromium that is left.
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group we created for
            // this chromedriver (process_group(0) made its pid the group id).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = child.wait();
    }
}

/// A browser profile: a fresh, empty `--user-data-dir`, deleted when the last clone is dropped.
/// Used by one [`Browser`] at a time; close it and launch again to simulate reopening the
/// browser (what was in `localStorage` is still there).
#[derive(Clone)]
pub struct Profile {
    inner: Arc<ProfileDir>,
}

struct ProfileDir {
    name: String,
    dir: tempfile::TempDir,
    in_use: AtomicBool,
}

impl Profile {
    /// A new empty profile. `name` appears in artifact file names and errors.
    pub fn new(name: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("learnsync-chromium-{}-", sanitize(name)))
            .tempdir()
            .context("creating a Chromium profile directory")?;
        Ok(Self {
            inner: Arc::new(ProfileDir {
                name: name.to_string(),
                dir,
                in_use: AtomicBool::new(false),
            }),
        })
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The `--user-data-dir`.
    pub fn path(&self) -> &Path {
        self.inner.dir.path()
    }
}

/// One running headless Chromium (one WebDriver session, one tab).
pub struct Browser {
    driver: Arc<Driver>,
    session: String,
    profile: Profile,
    links: Mutex<Vec<NetLink>>,
    console: Mutex<Vec<Value>>,
    closed: bool,
}

impl Browser {
    /// The profile this browser runs on.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}/session/{}{path}", self.driver.base, self.session);
        self.driver
            .request(method, &url, body)
            .await
            .with_context(|| format!("browser {:?}", self.profile.name()))
    }

    /// Navigates and waits for the page's `load` event.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.command(reqwest::Method::POST, "/url", Some(&json!({ "url": url })))
            .await?;
        Ok(())
    }

    /// Reloads the page and waits for its `load` event.
    pub async fn refresh(&self) -> Result<()> {
        self.command(reqwest::Method::POST, "/refresh", None)
            .await?;
        Ok(())
    }

    /// The current URL.
    pub async fn current_url(&self) -> Result<String> {
        let value = self.command(reqwest::Method::GET, "/url", None).await?;
        value
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("URL is not a string: {value}"))
    }

    /// Resizes the browser window (CSS pixels), e.g. to a phone's 390×844.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        )
        .await?;
        Ok(())
    }

    /// The WebDriver reference of the first element matching the CSS selector `css`.
    async fn element(&self, css: &str) -> Result<String> {
        let value = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(&json!({ "using": "css selector", "value": css })),
            )
            .await
            .with_context(|| format!("finding `{css}`"))?;
        value
            .get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("no element reference for `{css}` in {value}"))
    }

    /// Clicks the element matching `css` the way a user does (scrolled into view, hit-tested;
    /// fails when something else would get the click). Clicking an `<option>` selects it.
    pub async fn click(&self, css: &str) -> Result<()> {
        let id = self.element(css).await?;
        self.command(reqwest::Method::POST, &format!("/element/{id}/click"), None)
            .await
            .with_context(|| format!("clicking `{css}`"))?;
        Ok(())
    }

    /// Types `text` into the element matching `css` (focusing it first), as keystrokes. WebDriver
    /// key codes (`\u{E004}` Tab, `\u{E007}` Enter, …) press those keys.
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.element(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(&json!({ "text": text })),
        )
        .await
        .with_context(|| format!("typing into `{css}`"))?;
        Ok(())
    }

    /// Chooses files in the `<input type=file>` matching `css`, as a user picking them in the
    /// file dialog (`change` fires). Several files need the `multiple` attribute; a file input
    /// that already holds files gets these added, so clear it first to replace them.
    pub async fn choose_files(&self, css: &str, files: &[PathBuf]) -> Result<()> {
        let mut paths = Vec::with_capacity(files.len());
        for file in files {
            let path = file
                .canonicalize()
                .with_context(|| format!("file to upload {}", file.display()))?;
            paths.push(path.display().to_string());
        }
        self.type_into(css, &paths.join("\n")).await
    }

    /// Presses keys on whatever has the focus (`\u{E004}` Tab, `\u{E014}` ArrowRight, …),
    /// as a user at the keyboard: each key down, then up.
    pub async fn press_keys(&self, keys: &str) -> Result<()> {
        let mut actions = Vec::new();
        for key in keys.chars() {
            actions.push(json!({ "type": "keyDown", "value": key.to_string() }));
            actions.push(json!({ "type": "keyUp", "value": key.to_string() }));
        }
        let body = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] });
        self.command(reqwest::Method::POST, "/actions", Some(&body))
            .await?;
        Ok(())
    }

    /// Waits until the page shows a dialog (`alert`, `confirm`, `prompt`) and returns its text.
    /// Polls only the dialog: any other command while a dialog is open dismisses it.
    pub async fn wait_for_dialog(&self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .command(reqwest::Method::GET, "/alert/text", None)
                .await
            {
                Ok(text) => return Ok(text.as_str().unwrap_or_default().to_string()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("no dialog within {timeout:?}")));
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Answers the open dialog: OK (`true`) or Cancel (`false`).
    pub async fn answer_dialog(&self, accept: bool) -> Result<()> {
        let path = if accept {
            "/alert/accept"
        } else {
            "/alert/dismiss"
        };
        self.command(reqwest::Method::POST, path, None).await?;
        Ok(())
    }

    /// Runs `script` as the body of a synchronous function (`arguments[i]` are `args`) and
    /// returns what it `return`s, as JSON. A thrown exception is an error.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `body` as the body of an `async` function whose parameters are `args`
    /// (`args[0]`, …), awaits it and returns its result as JSON (`undefined` becomes `null`).
    /// A rejection or exception becomes an error carrying the JavaScript stack.
    ///
    /// ```ignore
    /// let id = browser.eval("const m = await import('/pkg/client_wasm.js'); await m.default();
    ///                         return m.courseDocumentId(args[0], args[1]);", vec![json!(l), json!("c")]).await?;
    /// ```
    pub async fn eval(&self, body: &str, args: Vec<Value>) -> Result<Value> {
        let script = format!(
            "const __done = arguments[arguments.length - 1];\n\
             const __args = Array.prototype.slice.call(arguments, 0, -1);\n\
             (async (args) => {{\n{body}\n}})(__args).then(\n\
               (value) => __done({{ ok: value === undefined ? null : value }}),\n\
               (e) => __done({{ err: String((e && e.stack) || e) }}));"
        );
        let answer = self
            .command(
                reqwest::Method::POST,
                "/execute/async",
                Some(&json!({ "script": script, "args": args })),
            )
            .await?;
        if let Some(err) = answer.get("err").and_then(Value::as_str) {
            bail!(
                "browser {:?}: script failed: {err}{}",
                self.profile.name(),
                self.console_tail().await
            );
        }
        Ok(answer.get("ok").cloned().unwrap_or(Value::Null))
    }

    /// Waits until the JavaScript expression `condition` is truthy and returns its value,
    /// evaluating it every 25 ms (errors while a page loads count as "not yet"). After
    /// `timeout`, takes a screenshot and fails with the last value or error and the console.
    pub async fn wait_for(&self, condition: &str, timeout: Duration) -> Result<Value> {
        let script = format!("return ({condition});");
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.execute(&script, vec![]).await {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => last = format!("last value: {value}"),
                Err(e) => last = format!("last error: {e:#}"),
            }
            if Instant::now() >= deadline {
                let shot = match self
                    .screenshot(&format!("{}-wait-timeout", self.profile.name()))
                    .await
                {
                    Ok(path) => format!("screenshot: {}", path.display()),
                    Err(e) => format!("no screenshot: {e:#}"),
                };
                bail!(
                    "browser {:?}: `{condition}` not true within {timeout:?}; {last}; {shot}{}",
                    self.profile.name(),
                    self.console_tail().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Saves a PNG of the viewport as `tests/artifacts/<name>-<unix ms>.png` and returns its
    /// path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let value = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await?;
        let encoded = value.as_str().context("screenshot is not a string")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .context("screenshot is not base64")?;
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let path = artifacts_dir()?.join(format!("{}-{millis}.png", sanitize(name)));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Takes the browser off the network, or puts it back: Chromium's network emulation
    /// (`navigator.onLine`, `offline`/`online` events, new requests and WebSockets fail with
    /// `ERR_INTERNET_DISCONNECTED`) plus every [`NetLink`] this browser is routed through (cut:
    /// open connections, WebSockets included, are closed; new ones refused).
    pub async fn set_offline(&self, offline: bool) -> Result<()> {
        for link in lock(&self.links).iter() {
            link.set_up(!offline);
        }
        self.command(
            reqwest::Method::POST,
            "/chromium/network_conditions",
            Some(&json!({ "network_conditions": {
                "offline": offline,
                "latency": 0,
                "download_throughput": -1,
                "upload_throughput": -1,
            }})),
        )
        .await?;
        Ok(())
    }

    /// Routes this browser's traffic to a server through `link` (the test points the browser at
    /// [`NetLink::url`]), so that [`Browser::set_offline`] also cuts the link.
    pub fn route_through(&self, link: &NetLink) {
        lock(&self.links).push(link.clone());
    }

    /// Sends a Chrome DevTools Protocol command to the page (e.g. `Network.clearBrowserCache`).
    pub async fn cdp(&self, command: &str, params: Value) -> Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(&json!({ "cmd": command, "params": params })),
        )
        .await
    }

    /// Everything the page logged to its console so far (entries with `level`, `message`,
    /// `timestamp`), including network errors.
    pub async fn console_log(&self) -> Result<Vec<Value>> {
        let fresh = self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(&json!({ "type": "browser" })),
            )
            .await?;
        let mut console = lock(&self.console);
        if let Value::Array(entries) = fresh {
            console.extend(entries);
        }
        Ok(console.clone())
    }

    async fn console_tail(&self) -> String {
        match self.console_log().await {
            Ok(entries) if entries.is_empty() => String::new(),
            Ok(entries) => {
                let tail: Vec<String> = entries[entries.len().saturating_sub(30)..]
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.get("level").and_then(Value::as_str).unwrap_or("?"),
                            e.get("message").and_then(Value::as_str).unwrap_or("")
                        )
                    })
                    .collect();
                format!("\n--- browser console (tail) ---\n{}", tail.join("\n"))
            }
            Err(e) => format!("\n(no browser console: {e:#})"),
        }
    }

    /// Ends the session: Chromium quits and flushes the profile (its `localStorage` survives
    /// for the next browser launched on the same [`Profile`]).
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        let result = self.command(reqwest::Method::DELETE, "", None).await;
        lock(&self.driver.sessions).remove(&self.session);
        self.profile.inner.in_use.store(false, Ordering::SeqCst);
        result.map(|_| ())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            self.driver.delete_session_blocking(&self.session);
            self.profile.inner.in_use.store(false, Ordering::SeqCst);
        }
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// One device's network path to a server: a TCP proxy on a random local port that can be cut
/// ([`NetLink::set_up`]`(false)`: open connections closed, new ones refused) and restored.
/// Cheap to clone; the proxy stops when the last clone is dropped.
///
/// `localStorage` belongs to an origin, port included: keep one link for the whole test when a
/// browser is restarted on the same profile.
#[derive(Clone)]
pub struct NetLink {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for LinkInner {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks: aborting it ends them all.
        self.task.abort();
    }
}

impl NetLink {
    /// Starts a proxy to `upstream`, up.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (up, up_rx) = watch::channel(true);
        let task = tokio::spawn(proxy(listener, upstream, up_rx));
        Ok(Self {
            inner: Arc::new(LinkInner { addr, up, task }),
        })
    }

    /// The local address browsers connect to.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:<port><path>` through this link.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.inner.addr)
    }

    /// `ws://127.0.0.1:<port><path>` through this link.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.inner.addr)
    }

    /// Restores (`true`) or cuts (`false`) the link.
    pub fn set_up(&self, up: bool) {
        self.inner.up.send_replace(up);
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        *self.inner.up.borrow()
    }
}

async fn proxy(listener: TcpListener, upstream: SocketAddr, up: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if !*up.borrow() {
                    drop(client); // refused: the peer sees the connection closed at once
                    continue;
                }
                let mut up = up.clone();
                connections.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                    // Dropping both ends closes them: the browser sees the connection lost.
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A static web server on a random local port for test pages and the wasm package: each mount
/// maps a URL prefix to a directory (`.wasm` is served as `application/wasm`). Stops on drop.
pub struct StaticSite {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl StaticSite {
    /// Serves `mounts` (`("/pkg", dir)`, …); a `"/"` mount serves everything else.
    pub async fn serve(mounts: &[(&str, PathBuf)]) -> Result<Self> {
        let mut router = axum::Router::new();
        for (prefix, dir) in mounts {
            if !dir.is_dir() {
                bail!("cannot serve {}: not a directory", dir.display());
            }
            let service = tower_http::services::ServeDir::new(dir);
            router = if *prefix == "/" || prefix.is_empty() {
                router.fallback_service(service)
            } else {
                router.nest_service(prefix, service)
            };
        }
        Self::serve_router(router).await
    }

    /// Serves any axum router (pages plus, say, a WebSocket endpoint).
    pub async fn serve_router(router: axum::Router) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("static site on {addr} stopped: {e}");
            }
        });
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn free_port() -> Result<u16> {
    let listener = StdTcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
