//! Simulated devices: each is a `sync_core::client::Client` (the same client logic browsers
//! run) with its own WebSocket, in pairs per user. Device A of a pair writes probe changes;
//! device B records when each arrives. Works against LearnSync (authenticated, derived
//! document ids) and the reference server (no auth, random document ids).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use sync_core::DocumentId;
use sync_core::client::{Client, ClientConfig, ClientEvent, ClientOutput, SyncStatus};
use sync_core::docs::preferences;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::target::{Kind, Server};

/// Latency observations shared by all devices.
pub struct Probes {
    sent: Mutex<HashMap<(usize, u64), Instant>>,
    /// Propagation latency, microseconds.
    pub latency: Mutex<Histogram<u64>>,
    /// Probe changes written.
    pub written: AtomicU64,
    /// Probe changes seen on the other device.
    pub seen: AtomicU64,
    /// Devices whose connection failed or was closed by the server.
    pub failures: AtomicUsize,
    /// Set by [`Fleet::stop`]: the scenario is over and its server about to go, so a connection
    /// that fails from now on is no failure (and not reported as one).
    stopping: AtomicBool,
}

impl Probes {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            sent: Mutex::new(HashMap::new()),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            ),
            written: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            failures: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        })
    }

    /// Forgets everything recorded so far (after warm-up).
    pub fn reset(&self) {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
        self.written.store(0, Ordering::Relaxed);
        self.seen.store(0, Ordering::Relaxed);
    }
}

enum Command {
    Probe(u64),
    Enroll(String),
    Status(oneshot::Sender<(SyncStatus, Vec<Vec<u8>>)>),
    Stop,
}

/// One device's handle.
pub struct Device {
    tx: mpsc::UnboundedSender<Command>,
    /// The device's user.
    pub user: usize,
}

/// Per-user credentials and document ids.
#[derive(Clone)]
pub struct Identity {
    /// `?token=` for LearnSync.
    pub token: Option<String>,
    /// Preferences document.
    pub preferences: DocumentId,
    /// Learning index.
    pub learning: DocumentId,
}

/// A fleet of devices, two per user.
pub struct Fleet {
    /// Devices; `2 * u` writes for user `u`, `2 * u + 1` observes.
    pub devices: Vec<Device>,
    /// Shared observations.
    pub probes: Arc<Probes>,
    next_seq: AtomicU64,
}

/// Creates `users` identities on the server (LearnSync: registered accounts with tokens).
pub async fn identities(
    server: &Server,
    users: usize,
    concurrency: usize,
) -> Result<Vec<Identity>> {
    match server.kind {
        Kind::Reference => Ok((0..users)
            .map(|_| Identity {
                token: None,
                preferences: random_doc(),
                learning: random_doc(),
            })
            .collect()),
        Kind::Learnsync => {
            let http = reqwest::Client::builder().build()?;
            let base = server.base.clone();
            let run = uuid::Uuid::new_v4().simple().to_string();
            let mut out = Vec::with_capacity(users);
            for chunk in (0..users).collect::<Vec<_>>().chunks(concurrency.max(1)) {
                let mut tasks = Vec::new();
                for &i in chunk {
                    let http = http.clone();
                    let base = base.clone();
                    let email = format!("bench-{}-{i}@bench.test", &run[..8]);
                    tasks.push(tokio::spawn(
                        async move { register(&http, &base, &email).await },
                    ));
                }
                for t in tasks {
                    out.push(t.await??);
                }
            }
            Ok(out)
        }
    }
}

async fn register(http: &reqwest::Client, base: &str, email: &str) -> Result<Identity> {
    let password = "bench-password-123";
    let r = http
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": email, "password": password, "display_name": "bench"}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("register failed: {}", r.text().await.unwrap_or_default());
    }
    let token: serde_json::Value = http
        .post(format!("{base}/api/auth/tokens"))
        .json(&json!({"email": email, "password": password, "name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let token = token["token"]
        .as_str()
        .context("token in response")?
        .to_string();
    let docs: serde_json::Value = http
        .get(format!("{base}/api/sync/documents"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    Ok(Identity {
        token: Some(token),
        preferences: DocumentId::parse(docs["preferences"].as_str().context("preferences id")?)?,
        learning: DocumentId::parse(docs["learning"].as_str().context("learning id")?)?,
    })
}

fn random_doc() -> DocumentId {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    DocumentId::from_bytes(b)
}

impl Fleet {
    /// Connects two devices per identity, `concurrency` connections at a time, and waits until
    /// every device is synced.
    pub async fn connect(server: &Server, ids: &[Identity], concurrency: usize) -> Result<Self> {
        let probes = Probes::new();
        let mut devices = Vec::with_capacity(ids.len() * 2);
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut pending = Vec::new();
        for (user, id) in ids.iter().enumerate() {
            for role in 0..2 {
                let url = match &id.token {
                    Some(t) => format!("{}?token={t}", server.ws_url),
                    None => server.ws_url.clone(),
                };
                let (tx, rx) = mpsc::unbounded_channel();
                let (ready_tx, ready_rx) = oneshot::channel();
                let sem = sem.clone();
                let probes = probes.clone();
                let ident = id.clone();
                tokio::spawn(async move {
                    let permit = sem.acquire_owned().await;
                    if let Err(e) = run_device(
                        url,
                        ident,
                        user,
                        role == 1,
                        rx,
                        probes.clone(),
                        ready_tx,
                        permit.ok(),
                    )
                    .await
                        && !probes.stopping.load(Ordering::Relaxed)
                    {
                        probes.failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("device of user {user} failed: {e:#}");
                    }
                });
                devices.push(Device { tx, user });
                pending.push(ready_rx);
            }
        }
        for r in pending {
            let _ = tokio::time::timeout(Duration::from_secs(300), r).await;
        }
        Ok(Self {
            devices,
            probes,
            next_seq: AtomicU64::new(1),
        })
    }

    /// Users in the fleet.
    pub fn users(&self) -> usize {
        self.devices.len() / 2
    }

    /// Device A of `user` writes one probe change.
    pub fn probe(&self, user: usize) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let _ = self.devices[user * 2].tx.send(Command::Probe(seq));
    }

    /// Device A of `user` enrolls in a course (builds up documents for first-sync scenarios).
    pub fn enroll(&self, user: usize, course: &str) {
        let _ = self.devices[user * 2]
            .tx
            .send(Command::Enroll(course.to_string()));
    }

    /// Waits until every device reports synced and each pair holds identical documents.
    /// Returns the number of pairs that differ at the deadline (lost or stuck changes).
    pub async fn settle(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut unsettled = 0;
            for user in 0..self.users() {
                let a = status(&self.devices[user * 2]).await;
                let b = status(&self.devices[user * 2 + 1]).await;
                let same = matches!((&a, &b), (Some((SyncStatus::Synced, ha)), Some((SyncStatus::Synced, hb))) if ha == hb);
                if !same {
                    unsettled += 1;
                }
            }
            if unsettled == 0 || tokio::time::Instant::now() > deadline {
                return unsettled;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Disconnects everything.
    pub fn stop(&self) {
        self.probes.stopping.store(true, Ordering::Relaxed);
        for d in &self.devices {
            let _ = d.tx.send(Command::Stop);
        }
    }
}

async fn status(d: &Device) -> Option<(SyncStatus, Vec<Vec<u8>>)> {
    let (tx, rx) = oneshot::channel();
    d.tx.send(Command::Status(tx)).ok()?;
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .ok()?
        .ok()
}

#[allow(clippy::too_many_arguments)]
async fn run_device(
    url: String,
    id: Identity,
    user: usize,
    observer: bool,
    mut rx: mpsc::UnboundedReceiver<Command>,
    probes: Arc<Probes>,
    ready: oneshot::Sender<()>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    let mut actor = [0u8; 16];
    rand::fill(&mut actor);
    // Unique across fleets (a scenario may run two at once): the user's learning document id.
    let peer = format!("bench-{}-{}", id.learning, if observer { "b" } else { "a" });
    let mut client = Client::new(ClientConfig {
        peer_id: peer.clone(),
        storage_id: Some(format!("storage-{peer}-{}", actor[0])),
        actor,
    });
    client.set_documents(id.preferences, id.learning);
    // Nagle's algorithm off, as browsers and the official client's Node sockets have it: a
    // device's change must not wait for the server's delayed ACK of its previous frame.
    //
    // A read buffer of 4 KiB (the server's is 1 KiB): tungstenite zeroes the buffer's free room up to
    // this size before every read, and its default (128 KiB) made that memset 8% of the load
    // generator's CPU, taken from the cores the server under test runs on. Frames larger than
    // the buffer still arrive whole (the buffer grows).
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
        .await
        .context("websocket connect")?;
    let (mut sink, mut stream) = ws.split();
    client.handle_connected();
    let mut ready = Some(ready);
    let mut permit = permit;
    let mut last_seen = 0u64;
    let pending: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let flush = |client: &mut Client| {
        while let Some(out) = client.poll_output() {
            if let ClientOutput::Send(frame) = out {
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(frame);
            }
        }
    };
    flush(&mut client);
    loop {
        let frames: Vec<Vec<u8>> =
            std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
        for f in frames {
            sink.send(Message::Binary(f.into())).await.context("send")?;
        }
        if ready.is_some() && client.status() == SyncStatus::Synced {
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
            permit.take();
        }
        tokio::select! {
            msg = stream.next() => {
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        let _ = client.handle_frame(&b);
                        while let Some(out) = client.poll_output() {
                            match out {
                                ClientOutput::Send(frame) => pending.lock().unwrap_or_else(|e| e.into_inner()).push(frame),
                                ClientOutput::Event(ClientEvent::Changed { doc, local: false, .. }) if observer && doc == id.preferences => {
                                    // The probe's key alone: reading every preference per
                                    // arrival cost the generator 2% of its CPU.
                                    if let Some(seq) = client.document(&doc).and_then(|d| preferences::get(d, "probe").ok().flatten()).and_then(|v| v.as_u64())
                                        && seq > last_seen
                                    {
                                        last_seen = seq;
                                        let sent = probes.sent.lock().unwrap_or_else(|e| e.into_inner()).remove(&(user, seq));
                                        if let Some(at) = sent {
                                            let us = at.elapsed().as_micros() as u64;
                                            let _ = probes.latency.lock().unwrap_or_else(|e| e.into_inner()).record(us.max(1));
                                            probes.seen.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    // tungstenite queues the pong itself; flush so it leaves now even if this
                    // device has nothing to send (servers drop peers that do not answer pings).
                    Some(Ok(Message::Ping(_))) => {
                        let _ = sink.flush().await;
                    }
                    Some(Ok(Message::Close(_))) | None => bail!("connection closed by the server"),
                    Some(Err(e)) => bail!("socket error: {e}"),
                    Some(Ok(_)) => {}
                }
            }
            cmd = rx.recv() => {
                match cmd {
                    Some(Command::Probe(seq)) => {
                        probes.sent.lock().unwrap_or_else(|e| e.into_inner()).insert((user, seq), Instant::now());
                        probes.written.fetch_add(1, Ordering::Relaxed);
                        let now = now_ms();
                        client.set_preference("probe", &json!(seq), now).context("probe edit")?;
                        flush(&mut client);
                    }
                    Some(Command::Enroll(course)) => {
                        client.enroll(&course, now_ms()).context("enroll")?;
                        client.set_progress(&course, 10.0, now_ms()).context("progress")?;
                        flush(&mut client);
                    }
                    Some(Command::Status(reply)) => {
                        // Heads straight from the live documents: a save and reload per poll
                        // cost more than the probes themselves once documents grow.
                        let heads = client
                            .documents()
                            .iter()
                            .filter_map(|d| client.heads(d))
                            .map(|heads| heads.iter().flat_map(|h| h.0.to_vec()).collect::<Vec<u8>>())
                            .collect();
                        let _ = reply.send((client.status(), heads));
                    }
                    Some(Command::Stop) | None => {
                        let _ = sink.close().await;
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
