//! A device for tests: `sync_core::client::Client` over a real WebSocket (tokio-tungstenite),
//! the same client logic the browser runs, with helpers to wait for conditions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::ChangeHash;
use futures_util::{SinkExt, StreamExt};
use sync_core::DocumentId;
use sync_core::client::{Client, ClientConfig, ClientEvent, ClientOutput, SyncStatus};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How a device authenticates its socket.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `Authorization: Bearer`.
    Bearer(String),
    /// `?token=` in the URL.
    QueryToken(String),
    /// A session cookie (`name=value`).
    Cookie(String),
}

/// The document ids a device got from `GET /api/sync/documents`.
#[derive(Debug, Clone, Copy)]
pub struct DocIds {
    /// Preferences document.
    pub preferences: DocumentId,
    /// Learning index.
    pub learning: DocumentId,
}

/// A simulated device.
pub struct Device {
    /// The client state machine (lock to read or edit, then call [`Device::flush`]).
    pub client: Arc<Mutex<Client>>,
    changed: Arc<Notify>,
    events: Arc<Mutex<Vec<ClientEvent>>>,
    acknowledged: Arc<Mutex<Acknowledged>>,
    out: Option<mpsc::UnboundedSender<Vec<u8>>>,
    pump: Option<JoinHandle<Option<String>>>,
    ws_url: String,
    credentials: Credentials,
}

impl Device {
    /// A device with a random actor and peer id, not connected yet.
    pub fn new(base_url: &str, credentials: Credentials, ids: DocIds) -> Self {
        let mut actor = [0u8; 16];
        rand::fill(&mut actor);
        let peer = format!("device-{}", hex_id(&actor[..6]));
        let mut client = Client::new(ClientConfig {
            peer_id: peer.clone(),
            storage_id: Some(format!("storage-{peer}")),
            actor,
        });
        client.set_documents(ids.preferences, ids.learning);
        let ws_url = base_url.replacen("http://", "ws://", 1) + "/sync";
        Self {
            client: Arc::new(Mutex::new(client)),
            changed: Arc::new(Notify::new()),
            events: Arc::new(Mutex::new(Vec::new())),
            acknowledged: Arc::new(Mutex::new(BTreeMap::new())),
            out: None,
            pump: None,
            ws_url,
            credentials,
        }
    }

    /// Connects (or reconnects) and starts pumping frames.
    pub async fn connect(&mut self) {
        self.disconnect().await;
        let url = match &self.credentials {
            Credentials::QueryToken(t) => format!("{}?token={t}", self.ws_url),
            _ => self.ws_url.clone(),
        };
        let mut request = url.into_client_request().expect("valid ws url");
        match &self.credentials {
            Credentials::Bearer(t) => {
                request.headers_mut().insert(
                    "authorization",
                    format!("Bearer {t}").parse().expect("header"),
                );
            }
            Credentials::Cookie(c) => {
                request
                    .headers_mut()
                    .insert("cookie", c.parse().expect("header"));
            }
            Credentials::QueryToken(_) => {}
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.client.lock().unwrap().handle_connected();
        self.out = Some(tx.clone());
        let client = self.client.clone();
        let changed = self.changed.clone();
        let events = self.events.clone();
        let acknowledged = self.acknowledged.clone();
        self.pump = Some(tokio::spawn(async move {
            let mut close_reason = None;
            loop {
                tokio::select! {
                    frame = rx.recv() => {
                        let Some(frame) = frame else { break };
                        if sink.send(Message::Binary(frame.into())).await.is_err() { break; }
                    }
                    msg = stream.next() => {
                        match msg {
                            Some(Ok(Message::Binary(b))) => {
                                let mut c = client.lock().unwrap();
                                let _ = c.handle_frame(&b);
                                record_acknowledged(&mut c, &acknowledged);
                                drain(&mut c, &tx, &events);
                                drop(c);
                                changed.notify_waiters();
                            }
                            Some(Ok(Message::Ping(_))) => {
                                // Send the pong tungstenite queued, even when idle.
                                let _ = sink.flush().await;
                            }
                            Some(Ok(Message::Close(frame))) => {
                                close_reason = frame.map(|f| f.reason.to_string());
                                break;
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        }
                    }
                }
            }
            client.lock().unwrap().handle_disconnected();
            changed.notify_waiters();
            close_reason
        }));
        self.flush();
    }

    /// Sends whatever the client wants to send (call after edits).
    pub fn flush(&self) {
        let mut c = self.client.lock().unwrap();
        match &self.out {
            Some(tx) => drain(&mut c, tx, &self.events),
            None => {
                // Offline: keep events, drop frames (the client resends on reconnect).
                while let Some(out) = c.poll_output() {
                    if let ClientOutput::Event(e) = out {
                        self.events.lock().unwrap().push(e);
                    }
                }
            }
        }
        drop(c);
        self.changed.notify_waiters();
    }

    /// Runs an edit on the client and sends the result.
    pub fn edit<T>(&self, f: impl FnOnce(&mut Client) -> T) -> T {
        let value = f(&mut self.client.lock().unwrap());
        self.flush();
        value
    }

    /// Points the device at another server (its next [`Device::connect`] goes there), e.g. when
    /// its instance died and it fails over to another one.
    pub fn move_to(&mut self, base_url: &str) {
        self.ws_url = base_url.replacen("http://", "ws://", 1) + "/sync";
    }

    /// Closes the socket (the device goes offline).
    pub async fn disconnect(&mut self) {
        self.out = None;
        if let Some(pump) = self.pump.take() {
            pump.abort();
            let _ = pump.await;
            self.client.lock().unwrap().handle_disconnected();
        }
    }

    /// Waits until the connection ends by itself; returns the server's close reason.
    pub async fn closed(&mut self, within: Duration) -> Option<String> {
        let pump = self.pump.take().expect("connected");
        self.out = None;
        tokio::time::timeout(within, pump)
            .await
            .expect("connection closes in time")
            .ok()
            .flatten()
    }

    /// Waits until `cond` holds on the client, or panics with `what` after `within`.
    pub async fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&Client) -> bool) {
        self.wait_until(what, within, || cond(&self.client.lock().unwrap()))
            .await;
    }

    /// Waits until the server has acknowledged some change this device wrote, or panics after
    /// `within`.
    pub async fn wait_acknowledged(&self, within: Duration) {
        self.wait_until("an acknowledged change", within, || {
            !self.acknowledged.lock().unwrap().is_empty()
        })
        .await;
    }

    /// Re-checks `cond` each time a frame from the server has been handled.
    async fn wait_until(&self, what: &str, within: Duration, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            if cond() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if cond() {
                    return;
                }
                panic!("timed out waiting for: {what}");
            }
        }
    }

    /// Waits until the device reports `synced`.
    pub async fn synced(&self) {
        self.wait_for("synced", Duration::from_secs(20), |c| {
            c.status() == SyncStatus::Synced
        })
        .await;
    }

    /// Every change of its own this device ever saw the server acknowledge, per document (kept
    /// across disconnects): the server said it stored each, so after any fault they must all
    /// be in storage. (Other devices' changes it received may not be: the server forwards a
    /// change before its write commits.)
    pub fn acknowledged(&self) -> Acknowledged {
        self.acknowledged.lock().unwrap().clone()
    }

    /// Events seen so far.
    pub fn events(&self) -> Vec<ClientEvent> {
        self.events.lock().unwrap().clone()
    }
}

/// The changes a device wrote that the server acknowledged to it, per document.
pub type Acknowledged = BTreeMap<DocumentId, BTreeSet<ChangeHash>>;

fn record_acknowledged(c: &mut Client, acknowledged: &Mutex<Acknowledged>) {
    let mut acked = acknowledged.lock().unwrap();
    for doc in c.documents() {
        let own = c.acknowledged(&doc);
        if !own.is_empty() {
            acked.entry(doc).or_default().extend(own);
        }
    }
}

fn drain(c: &mut Client, tx: &mpsc::UnboundedSender<Vec<u8>>, events: &Mutex<Vec<ClientEvent>>) {
    while let Some(out) = c.poll_output() {
        match out {
            ClientOutput::Send(frame) => {
                let _ = tx.send(frame);
            }
            ClientOutput::Event(e) => events.lock().unwrap().push(e),
            ClientOutput::Persist(_) => {}
        }
    }
}

fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(p) = self.pump.take() {
            p.abort();
        }
    }
}
