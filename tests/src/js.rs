//! Node.js scripts from `tests/js/` as test peers: the official automerge-repo clients, the
//! reference server for benchmarks, the wasm client under Node.
//!
//! The convention between a script and a test is line-based: every line a script prints on
//! stdout that is a JSON value is a message to the test; anything else on stdout is kept as log;
//! stderr is log too (echoed with a `[node <script>]` prefix, so nextest shows it when the test
//! fails, and quoted in every error). Tests may send JSON lines to the script's stdin.
//! `tests/js/lib/harness.mjs` implements the script side (`emit`, `commands`, `fail`).
//!
//! ```ignore
//! let mut node = NodeCommand::new("wasm_smoke.mjs").arg(&pkg_dir).spawn()?;
//! let result = node.recv_type("result", Duration::from_secs(20)).await?;
//! node.finish(Duration::from_secs(5)).await?;
//! ```
//!
//! The process is killed when the [`NodeProcess`] is dropped, so a failing test leaves nothing
//! behind. The packages the scripts import come from `scripts/setup-js.sh`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

/// How many stderr lines (and non-JSON stdout lines) a process keeps for error messages.
const LOG_TAIL: usize = 400;

/// `tests/js/`, where the scripts, `package.json` and `node_modules` live.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// The workspace root (`/work/main` in the team checkout).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// A Node.js script to start: `node <tests/js/script> <args…>` with the working directory
/// `tests/js/` (so bare imports resolve to its `node_modules`).
#[derive(Debug, Clone)]
pub struct NodeCommand {
    script: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl NodeCommand {
    /// A script by its path relative to `tests/js/` (an absolute path works too).
    pub fn new(script: impl AsRef<Path>) -> Self {
        Self {
            script: js_dir().join(script),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the script (the test's environment is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts the script. Fails when `node` is missing or the script does not exist; the
    /// binary is `$NODE` when set, else `node` from `PATH`.
    pub fn spawn(self) -> Result<NodeProcess> {
        let name = self
            .script
            .strip_prefix(js_dir())
            .unwrap_or(&self.script)
            .display()
            .to_string();
        if !self.script.is_file() {
            bail!("node script {} does not exist", self.script.display());
        }
        let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
        let mut command = Command::new(&node);
        command
            .arg(&self.script)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow!(
                    "cannot start {}: not found. Node.js 20 or newer is needed (set NODE to its path)",
                    Path::new(&node).display()
                )
            } else {
                anyhow!("cannot start node {name}: {e}")
            }
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        let stderr = child.stderr.take().context("child stderr")?;

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        let prefix = format!("[node {name}]");
        let stderr_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{prefix} {line}");
                push_tail(&tail, line);
            }
        });

        Ok(NodeProcess {
            name,
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            stdout_eof: false,
            stdout_log: VecDeque::new(),
            stderr_tail,
            stderr_task: Some(stderr_task),
        })
    }
}

/// A running Node.js script. Killed on drop.
#[derive(Debug)]
pub struct NodeProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stdout_eof: bool,
    stdout_log: VecDeque<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_task: Option<JoinHandle<()>>,
}

impl NodeProcess {
    /// The process id.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The next JSON message on stdout, waiting at most `timeout`. Non-JSON lines are kept as
    /// log and skipped. Fails on timeout or when the script exits first (with its exit status
    /// and stderr in the error).
    pub async fn recv(&mut self, timeout: Duration) -> Result<Value> {
        self.recv_until(timeout, |_| true).await
    }

    /// The next JSON message for which `accept` is true, skipping the others, waiting at most
    /// `timeout` in all. A message `{"type": "error", …}` (what `harness.mjs`'s `fail` prints)
    /// fails at once, whatever `accept` says.
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        mut accept: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout_eof {
                let status = self.wait_exit(Duration::from_secs(5)).await;
                return Err(self
                    .failure(format!(
                        "exited ({}) before sending the message the test waits for",
                        describe_status(status)
                    ))
                    .await);
            }
            let line = match timeout_at(deadline, self.stdout.next_line()).await {
                Err(_) => {
                    return Err(self
                        .failure(format!("no awaited message within {timeout:?}"))
                        .await);
                }
                Ok(Err(e)) => return Err(self.failure(format!("reading stdout: {e}")).await),
                Ok(Ok(None)) => {
                    self.stdout_eof = true;
                    continue;
                }
                Ok(Ok(Some(line))) => line,
            };
            match serde_json::from_str::<Value>(&line) {
                Ok(value) => {
                    if value.get("type").and_then(Value::as_str) == Some("error") {
                        return Err(self.failure(format!("script reported {value}")).await);
                    }
                    if accept(&value) {
                        return Ok(value);
                    }
                    self.log_stdout(line);
                }
                Err(_) => self.log_stdout(line),
            }
        }
    }

    /// The next JSON message whose `"type"` is `ty`, skipping others.
    pub async fn recv_type(&mut self, ty: &str, timeout: Duration) -> Result<Value> {
        self.recv_until(timeout, |v| {
            v.get("type").and_then(Value::as_str) == Some(ty)
        })
        .await
    }

    /// Sends one JSON line to the script's stdin.
    pub async fn send(&mut self, message: &Value) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("node {}: stdin already closed", self.name);
        };
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        let sent = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        if let Err(e) = sent.await {
            return Err(self.failure(format!("writing to stdin: {e}")).await);
        }
        Ok(())
    }

    /// Closes stdin (scripts reading commands take that as "finish"), reads the remaining JSON
    /// messages and waits for the exit, all within `timeout`. Fails unless the exit status is 0.
    pub async fn finish(mut self, timeout: Duration) -> Result<Vec<Value>> {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        let mut messages = Vec::new();
        while !self.stdout_eof {
            match timeout_at(deadline, self.stdout.next_line()).await {
                Err(_) => {
                    return Err(self
                        .failure(format!("did not exit within {timeout:?}"))
                        .await);
                }
                Ok(Ok(Some(line))) => match serde_json::from_str::<Value>(&line) {
                    Ok(value) if value.get("type").and_then(Value::as_str) == Some("error") => {
                        return Err(self.failure(format!("script reported {value}")).await);
                    }
                    Ok(value) => messages.push(value),
                    Err(_) => self.log_stdout(line),
                },
                Ok(Ok(None)) | Ok(Err(_)) => self.stdout_eof = true,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.wait_exit(left).await {
            Some(status) if status.success() => Ok(messages),
            status => Err(self
                .failure(format!("exited with {}", describe_status(status)))
                .await),
        }
    }

    /// Kills the script now (it is also killed on drop).
    pub async fn kill(&mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("killing node {}", self.name))
    }

    /// What the script wrote on stderr so far (the last few hundred lines).
    pub fn stderr(&self) -> String {
        join_tail(&self.stderr_tail)
    }

    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => None,
        }
    }

    fn log_stdout(&mut self, line: String) {
        eprintln!("[node {} stdout] {line}", self.name);
        self.stdout_log.push_back(line);
        if self.stdout_log.len() > LOG_TAIL {
            self.stdout_log.pop_front();
        }
    }

    /// An error naming the script, with its stderr and stray stdout, and a hint when the npm
    /// packages are missing.
    async fn failure(&mut self, what: String) -> anyhow::Error {
        // Once the process is gone its stderr closes: let the reader drain it so the error
        // shows the script's last words.
        if let Ok(Some(_)) = self.child.try_wait()
            && let Some(task) = self.stderr_task.take()
        {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let mut message = format!("node {}: {what}", self.name);
        let stderr = self.stderr();
        if !stderr.is_empty() {
            message.push_str("\n--- stderr ---\n");
            message.push_str(&stderr);
        }
        if !self.stdout_log.is_empty() {
            message.push_str("\n--- other stdout ---\n");
            message.push_str(&Vec::from(self.stdout_log.clone()).join("\n"));
        }
        if !js_dir().join("node_modules").is_dir() {
            message.push_str("\nhint: tests/js/node_modules is missing: run scripts/setup-js.sh");
        }
        anyhow!(message)
    }
}

fn push_tail(tail: &Mutex<VecDeque<String>>, line: String) {
    let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tail.push_back(line);
    if tail.len() > LOG_TAIL {
        tail.pop_front();
    }
}

fn join_tail(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Vec::from(tail.clone()).join("\n")
}

fn describe_status(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => status.to_string(),
        None => "still running or unknown status".to_string(),
    }
}
