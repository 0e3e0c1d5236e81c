//! Deterministic simulation of the whole sync system (GOALS.md R1), the way FoundationDB and
//! TigerBeetle test themselves: the sans-IO server hub and 2–5 device clients run in memory
//! under a virtual clock with seeded randomness. Frames are delayed; connections drop (losing
//! what was in flight) and frames are duplicated; devices go offline and edit; the database
//! fails writes and loads; the server crashes and restarts from what storage holds (writes in
//! flight at the crash either committed or not). At the end the network heals and everything
//! must converge.
//!
//! Checked continuously: **every change a device wrote and saw acknowledged is in storage**
//! (also across crashes). Checked at the end: every replica and the stored copy are identical, and
//! the merge rules held (nothing a device wrote is lost, progress is the max, time adds up).
//!
//! `SIM_SCHEDULES` sets how many seeds run (default 10,000); `SIM_SEED=<n>` replays one seed.
//! A failure prints its seed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use automerge::{AutoCommit, ReadDoc};
use serde_json::json;
use sync_core::client::{Client, ClientConfig, ClientOutput};
use sync_core::docs::{self, course, learning, preferences};
use sync_core::hub::{
    ConnId, DocMeta, Hub, HubConfig, Output, OwnerOrAdmin, PeerInfo, StorageFailure, StoreWrite,
    StoredDoc, SyncInput, TaskId,
};
use sync_core::session::{PeerSession, SessionAction, SessionLimits};
use sync_core::{DocumentId, UserNamespace};

const USER: &str = "u1";
const COURSES: [&str; 2] = ["c1", "c2"];
const LESSONS: [&str; 3] = ["l1", "l2", "l3"];

/// A small seeded generator (xorshift64*): the simulation must not depend on anything but the
/// seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default)]
struct Storage {
    docs: BTreeMap<DocumentId, (DocMeta, Vec<Vec<u8>>)>,
    states: HashMap<(DocumentId, String), Vec<u8>>,
    /// The stored document as loaded from all its chunks, for the acknowledgement check.
    live: HashMap<DocumentId, AutoCommit>,
}

impl Storage {
    fn doc(&self, id: &DocumentId) -> AutoCommit {
        let mut d = AutoCommit::new();
        if let Some((_, chunks)) = self.docs.get(id) {
            for c in chunks {
                d.load_incremental(c).expect("stored chunk loads");
            }
        }
        d
    }
}

/// One direction of one connection: frames with their delivery time, delivered in order.
#[derive(Default)]
struct Pipe {
    frames: VecDeque<(i64, Vec<u8>)>,
}

struct Connection {
    id: ConnId,
    device: usize,
    session: PeerSession,
    up: Pipe,
    down: Pipe,
    alive: bool,
}

struct Device {
    client: Client,
    /// Its automerge actor: the changes it wrote are this actor's.
    actor: [u8; 16],
    online: bool,
    conn: Option<usize>,
    reconnect_at: i64,
}

/// Loads and stores the hub asked for, completed after a delay (or never, if the server
/// crashes first).
enum Pending {
    Load(TaskId, DocumentId),
    Store(TaskId, StoreWrite),
}

struct Sim {
    rng: Rng,
    now: i64,
    hub: Hub,
    storage: Storage,
    pending: Vec<(i64, Pending)>,
    conns: Vec<Connection>,
    devices: Vec<Device>,
    next_conn: u64,
    ns: UserNamespace,
    db_failing: bool,
    /// `SIM_TRACE`: a document id prefix whose traffic is printed.
    trace: Option<String>,
    /// Facts to check at the end.
    time_added: i64,
    enrolled: BTreeSet<String>,
    completed: BTreeMap<u32, BTreeSet<String>>,
    max_attempt: u32,
    /// Highest accepted progress write per attempt.
    progress: BTreeMap<u32, f64>,
    /// Odd seeds hand the hub the sync messages of one delivery round together
    /// (`handle_sync_batch`, as the server's shard does with its inbox); even seeds one by one.
    batching: bool,
    syncs: Vec<SyncInput>,
}

fn hub(seed: u64) -> Hub {
    let mut actor = [0u8; 16];
    actor[..8].copy_from_slice(&seed.to_le_bytes());
    actor[15] = 0xAA;
    let mut config = HubConfig::new(actor);
    config.idle_evict_ms = 2_000;
    config.min_retry_ms = 50;
    config.max_retry_ms = 400;
    Hub::new(config, OwnerOrAdmin)
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let ns = UserNamespace::from_bytes([3; 16]);
        let n = 2 + rng.below(4) as usize;
        let devices = (0..n)
            .map(|i| {
                let mut actor = [0u8; 16];
                actor[0] = i as u8 + 1;
                actor[1..9].copy_from_slice(&seed.to_le_bytes());
                let mut client = Client::new(ClientConfig {
                    peer_id: format!("device-{i}"),
                    storage_id: Some(format!("storage-{i}")),
                    actor,
                });
                client.set_documents(DocumentId::preferences(&ns), DocumentId::learning(&ns));
                Device {
                    client,
                    actor,
                    online: true,
                    conn: None,
                    reconnect_at: 0,
                }
            })
            .collect();
        Self {
            rng,
            now: 1_700_000_000_000,
            hub: hub(seed),
            storage: Storage::default(),
            pending: Vec::new(),
            conns: Vec::new(),
            devices,
            next_conn: 1,
            ns,
            db_failing: false,
            trace: std::env::var("SIM_TRACE").ok(),
            time_added: 0,
            enrolled: BTreeSet::new(),
            completed: BTreeMap::new(),
            max_attempt: 1,
            progress: BTreeMap::new(),
            batching: seed % 2 == 1,
            syncs: Vec::new(),
        }
    }

    /// Hands the hub the sync messages waiting in this round's batch.
    fn deliver_syncs(&mut self) {
        if !self.syncs.is_empty() {
            let batch = std::mem::take(&mut self.syncs);
            self.hub.handle_sync_batch(batch, self.now);
            self.drain_hub();
        }
    }

    fn traces(&self, doc: &DocumentId) -> bool {
        self.trace
            .as_ref()
            .is_some_and(|f| doc.to_string().starts_with(f))
    }

    fn latency(&mut self, faults: bool) -> i64 {
        1 + self.rng.below(if faults { 40 } else { 5 }) as i64
    }

    // ---------------------------------------------------------------------------------------
    // Server side

    fn drain_hub(&mut self) {
        while let Some(out) = self.hub.poll_output() {
            match out {
                Output::Send { conn, message } => {
                    if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn && c.alive) {
                        let frame = c.session.encode(&message);
                        let at = self.now + 1 + (self.rng.below(5) as i64);
                        c.down.frames.push_back((at, frame));
                    }
                }
                Output::Close { conn, .. } => self.kill_conn_by_id(conn),
                Output::Load { task, doc } => {
                    let at = self.now + 1 + self.rng.below(10) as i64;
                    self.pending.push((at, Pending::Load(task, doc)));
                }
                Output::Store { task, write } => {
                    if self.traces(&write.doc) {
                        eprintln!(
                            "{} STORE {task:?} {} bytes heads {:?}",
                            self.now,
                            write.changes.len(),
                            write
                                .heads
                                .iter()
                                .map(|h| h.to_string()[..6].to_string())
                                .collect::<Vec<_>>()
                        );
                    }
                    let at = self.now + 1 + self.rng.below(10) as i64;
                    self.pending.push((at, Pending::Store(task, write)));
                }
                Output::SaveSyncStates(states) => {
                    for s in states {
                        self.storage.states.insert((s.doc, s.storage_id), s.state);
                    }
                }
                Output::DeleteSyncStates { storage_ids } => match storage_ids {
                    None => self.storage.states.clear(),
                    Some(ids) => self.storage.states.retain(|(_, s), _| !ids.contains(s)),
                },
                Output::Compact { doc } => {
                    // As the server's compactor: the chunks folded into one snapshot.
                    let folded = self.storage.doc(&doc).save();
                    if let Some((_, chunks)) = self.storage.docs.get_mut(&doc) {
                        *chunks = vec![folded];
                    }
                }
                Output::EditDone { .. } | Output::Denied { .. } => {}
            }
        }
    }

    fn complete_io(&mut self) {
        let now = self.now;
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.pending = rest;
        for (_, p) in due {
            let fail = self.db_failing;
            match p {
                Pending::Load(task, doc) => {
                    if self.traces(&doc) {
                        eprintln!("{} LOADED {task:?} fail={fail}", self.now);
                    }
                    let result = if fail {
                        Err(StorageFailure::Unavailable("db down".into()))
                    } else {
                        Ok(self.storage.docs.get(&doc).map(|(meta, chunks)| StoredDoc {
                            meta: meta.clone(),
                            chunks: chunks.clone(),
                            sync_states: self
                                .storage
                                .states
                                .iter()
                                .filter(|((d, _), _)| *d == doc)
                                .map(|((_, s), v)| (s.clone(), v.clone()))
                                .collect(),
                        }))
                    };
                    self.hub.handle_loaded(task, result, now);
                }
                Pending::Store(task, write) => {
                    if self.traces(&write.doc) {
                        eprintln!("{} STORED {task:?} fail={fail}", self.now);
                    }
                    let result = if fail {
                        Err(StorageFailure::Unavailable("db down".into()))
                    } else {
                        self.commit(write);
                        Ok(())
                    };
                    self.hub.handle_stored(task, result, now);
                }
            }
            self.drain_hub();
        }
    }

    fn commit(&mut self, write: StoreWrite) {
        let entry = self
            .storage
            .docs
            .entry(write.doc)
            .or_insert_with(|| (write.meta.clone(), Vec::new()));
        if entry.0.owner.is_none() {
            entry.0 = write.meta.clone();
        }
        if !write.changes.is_empty() {
            let live = self.storage.live.entry(write.doc).or_default();
            live.load_incremental(&write.changes)
                .expect("stored chunk loads");
            entry.1.push(write.changes);
        }
    }

    /// The server process dies: the hub and every connection are gone; writes in flight
    /// either made it to the database or not.
    fn crash(&mut self) {
        if self.trace.is_some() {
            eprintln!("{} CRASH", self.now);
        }
        // The process dies with its inbox.
        self.syncs.clear();
        for (_, p) in std::mem::take(&mut self.pending) {
            if let Pending::Store(_, write) = p
                && !self.db_failing
                && self.rng.chance(50)
            {
                self.commit(write);
            }
        }
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.alive)
            .map(|c| c.id)
            .collect();
        for id in ids {
            self.kill_conn_by_id(id);
        }
        self.hub = hub(self.rng.next());
        self.check_acknowledged();
    }

    // ---------------------------------------------------------------------------------------
    // Connections

    fn connect(&mut self, device: usize) {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let session = PeerSession::new(
            "server".into(),
            "server-storage".into(),
            SessionLimits::default(),
            self.now,
        );
        self.conns.push(Connection {
            id,
            device,
            session,
            up: Pipe::default(),
            down: Pipe::default(),
            alive: true,
        });
        self.devices[device].conn = Some(self.conns.len() - 1);
        self.devices[device].client.handle_connected();
        self.drain_client(device);
    }

    fn kill_conn_by_id(&mut self, id: ConnId) {
        let Some(idx) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        if !self.conns[idx].alive {
            return;
        }
        // What the connection sent before it died reaches the hub first, as in the server.
        self.deliver_syncs();
        self.conns[idx].alive = false;
        let device = self.conns[idx].device;
        self.hub.handle_disconnect(id);
        self.drain_hub();
        if self.devices[device].conn == Some(idx) {
            self.devices[device].conn = None;
            self.devices[device].client.handle_disconnected();
            self.devices[device].reconnect_at = self.now + 10 + self.rng.below(200) as i64;
            self.drain_client(device);
        }
    }

    fn drain_client(&mut self, device: usize) {
        while let Some(out) = self.devices[device].client.poll_output() {
            if let ClientOutput::Send(frame) = out
                && let Some(idx) = self.devices[device].conn
                && self.conns[idx].alive
            {
                let at = self.now + 1 + self.rng.below(5) as i64;
                self.conns[idx].up.frames.push_back((at, frame));
            }
        }
        self.check_acknowledged();
    }

    /// Delivers due frames, one connection at a time, in order.
    fn deliver(&mut self, faults: bool) {
        for idx in 0..self.conns.len() {
            while self.conns[idx].alive {
                // Upstream (device → server).
                let up_due = self.conns[idx]
                    .up
                    .frames
                    .front()
                    .is_some_and(|(at, _)| *at <= self.now);
                let down_due = self.conns[idx]
                    .down
                    .frames
                    .front()
                    .is_some_and(|(at, _)| *at <= self.now);
                if !up_due && !down_due {
                    break;
                }
                if faults && self.rng.chance(1) {
                    // A lost frame: the transport breaks, as TCP would.
                    let id = self.conns[idx].id;
                    self.kill_conn_by_id(id);
                    break;
                }
                if up_due {
                    let Some((_, frame)) = self.conns[idx].up.frames.pop_front() else {
                        break;
                    };
                    let copies = if faults && self.rng.chance(2) { 2 } else { 1 };
                    for _ in 0..copies {
                        self.server_frame(idx, &frame);
                    }
                }
                if down_due && self.conns[idx].alive {
                    let Some((_, frame)) = self.conns[idx].down.frames.pop_front() else {
                        break;
                    };
                    let device = self.conns[idx].device;
                    let copies = if faults && self.rng.chance(2) { 2 } else { 1 };
                    for _ in 0..copies {
                        if let Some(filter) = &self.trace {
                            trace(filter, self.now, "down", self.conns[idx].id, device, &frame);
                        }
                        let _ = self.devices[device].client.handle_frame(&frame);
                    }
                    self.drain_client(device);
                }
            }
        }
        self.deliver_syncs();
    }

    fn server_frame(&mut self, idx: usize, frame: &[u8]) {
        if let Some(filter) = &self.trace {
            trace(
                filter,
                self.now,
                "up",
                self.conns[idx].id,
                self.conns[idx].device,
                frame,
            );
        }
        let now = self.now;
        let conn = self.conns[idx].id;
        let actions = self.conns[idx].session.handle_frame(frame, now);
        for action in actions {
            match action {
                SessionAction::Send(bytes) => {
                    let at = now + 1;
                    self.conns[idx].down.frames.push_back((at, bytes));
                }
                SessionAction::Joined { storage_id, .. } => {
                    self.deliver_syncs();
                    self.hub.handle_connect(
                        conn,
                        PeerInfo {
                            user_id: USER.into(),
                            is_admin: false,
                            namespace: Some(self.ns),
                            storage_id,
                        },
                    );
                }
                SessionAction::Sync { doc, request, data } if self.batching => {
                    self.syncs.push(SyncInput {
                        conn,
                        doc,
                        request,
                        data,
                    });
                }
                SessionAction::Sync { doc, request, data } => {
                    self.hub.handle_sync(conn, doc, request, data, now);
                }
                SessionAction::Ephemeral { .. } | SessionAction::Ignored(_) => {}
                SessionAction::Close { .. } => self.kill_conn_by_id(conn),
            }
            self.drain_hub();
        }
    }

    // ---------------------------------------------------------------------------------------
    // Devices

    fn random_edit(&mut self, device: usize) {
        let now = self.now;
        let c = COURSES[self.rng.below(COURSES.len() as u64) as usize];
        let client = &mut self.devices[device].client;
        let enrolled = client
            .enrollments()
            .unwrap()
            .iter()
            .any(|e| e.course_id == c);
        match self.rng.below(7) {
            0 => {
                client.enroll(c, now).unwrap();
                self.enrolled.insert(c.into());
            }
            _ if !enrolled => {
                // Course operations need the course in the learning index.
                let err = client.add_time(c, 1, now).unwrap_err();
                assert_eq!(err, sync_core::client::ClientError::NotEnrolled(c.into()));
            }
            1 => {
                let lesson = LESSONS[self.rng.below(LESSONS.len() as u64) as usize];
                let attempt = attempt_of(client, c);
                client.complete_lesson(c, lesson, now).unwrap();
                self.completed
                    .entry(attempt_key(c, attempt))
                    .or_default()
                    .insert(format!("{c}/{lesson}"));
            }
            2 => {
                let p = self.rng.below(101) as f64;
                let attempt = attempt_of(client, c);
                if client.set_progress(c, p, now).unwrap() == course::ProgressOutcome::Raised {
                    let best = self.progress.entry(attempt_key(c, attempt)).or_insert(0.0);
                    *best = best.max(p);
                }
            }
            3 => {
                let s = self.rng.below(300) as i64;
                client.add_time(c, s, now).unwrap();
                if c == "c1" {
                    self.time_added += s;
                }
            }
            4 if self.rng.chance(20) => {
                let next = client.restart(c, now).unwrap();
                if c == "c1" {
                    self.max_attempt = self.max_attempt.max(next);
                }
            }
            5 => {
                let theme = ["light", "dark", "system"][self.rng.below(3) as usize];
                client.set_preference("theme", &json!(theme), now).unwrap();
            }
            _ => {
                client
                    .set_preference("volume", &json!(self.rng.below(10)), now)
                    .unwrap();
            }
        }
        self.drain_client(device);
    }

    /// Every change a device wrote and has seen the server acknowledge must be in storage.
    /// (Other devices' changes may reach it before they are stored: the server fans a change
    /// out while its write is in flight.)
    fn check_acknowledged(&mut self) {
        for (i, d) in self.devices.iter_mut().enumerate() {
            for doc in d.client.documents() {
                for hash in d.client.acknowledged(&doc) {
                    let stored = self
                        .storage
                        .live
                        .get(&doc)
                        .is_some_and(|s| s.get_change_by_hash(&hash).is_some());
                    assert!(
                        stored,
                        "device {i} saw {hash} acknowledged for {doc} but it is not stored"
                    );
                }
            }
        }
    }

    fn step(&mut self, faults: bool) {
        self.now += self.latency(faults);
        self.complete_io();
        self.deliver(faults);
        if self.now % 50 < 5 {
            self.hub.handle_tick(self.now);
            self.drain_hub();
        }
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            if d.online && d.conn.is_none() && self.now >= d.reconnect_at {
                self.connect(i);
            }
        }
    }

    fn run(&mut self) {
        let steps = 60 + self.rng.below(120);
        for _ in 0..steps {
            let r = self.rng.below(1000);
            let device = self.rng.below(self.devices.len() as u64) as usize;
            match r {
                0..=119 => self.random_edit(device),
                120..=134 => {
                    // The device goes offline (its connection dies) or comes back.
                    let d = &mut self.devices[device];
                    d.online = !d.online;
                    if !d.online
                        && let Some(idx) = d.conn
                    {
                        let id = self.conns[idx].id;
                        self.kill_conn_by_id(id);
                    }
                }
                135..=139 => self.db_failing = !self.db_failing,
                140..=142 => self.crash(),
                _ => {}
            }
            self.step(true);
        }
        // Heal: everyone online, the database back, no faults, run until quiet.
        self.db_failing = false;
        for d in &mut self.devices {
            d.online = true;
        }
        for _ in 0..5_000 {
            self.now += 300;
            self.hub.handle_tick(self.now);
            self.drain_hub();
            self.step(false);
            if self.quiet() {
                break;
            }
        }
    }

    fn quiet(&mut self) -> bool {
        self.pending.is_empty()
            && self
                .conns
                .iter()
                .filter(|c| c.alive)
                .all(|c| c.up.frames.is_empty() && c.down.frames.is_empty())
            && self.devices.iter().all(|d| d.conn.is_some())
            && self
                .devices
                .iter()
                .all(|d| d.client.status() == sync_core::client::SyncStatus::Synced)
    }

    fn verify(&mut self, seed: u64) {
        if !self.quiet() {
            let statuses: Vec<_> = self
                .devices
                .iter()
                .map(|d| (d.online, d.conn.is_some(), d.client.status()))
                .collect();
            for (i, d) in self.devices.iter_mut().enumerate() {
                for doc in d.client.documents() {
                    let mut mine = AutoCommit::load(&d.client.save(&doc).unwrap()).unwrap();
                    let server = d.client.server_heads(&doc);
                    let stored = self.storage.doc(&doc).get_heads();
                    if mine.get_heads() != server {
                        eprintln!(
                            "device {i} doc {doc}: mine {:?} server-known {server:?} stored {stored:?}",
                            mine.get_heads()
                        );
                    }
                }
            }
            for c in &self.conns {
                if c.alive {
                    eprintln!(
                        "conn {:?} dev {} up {:?} down {:?} now {}",
                        c.id,
                        c.device,
                        c.up.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
                        c.down.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
                        self.now
                    );
                }
            }
            panic!(
                "seed {seed}: did not converge: pending io {}, devices {statuses:?}, db_failing {}",
                self.pending.len(),
                self.db_failing
            );
        }
        self.check_acknowledged();
        let mut docs: BTreeSet<DocumentId> = BTreeSet::new();
        for d in &self.devices {
            docs.extend(d.client.documents());
        }
        for doc in docs {
            let mut stored = self.storage.doc(&doc);
            let stored_heads = stored.get_heads();
            for (i, d) in self.devices.iter_mut().enumerate() {
                let bytes = d.client.save(&doc).unwrap_or_default();
                let mut mine = AutoCommit::load(&bytes).unwrap_or_default();
                assert_eq!(
                    mine.get_heads(),
                    stored_heads,
                    "seed {seed}: device {i} differs from storage on {doc}"
                );
                // Converged, so everything the device wrote is acknowledged to it.
                let actor = automerge::ActorId::from(d.actor);
                let mut own: Vec<_> = mine
                    .get_changes(&[])
                    .iter()
                    .filter(|c| c.actor_id() == &actor)
                    .map(|c| c.hash())
                    .collect();
                let mut acked = d.client.acknowledged(&doc);
                own.sort();
                acked.sort();
                assert_eq!(
                    acked, own,
                    "seed {seed}: device {i}'s changes not all acknowledged on {doc}"
                );
            }
        }
        // Merge rules on course c1.
        let learning_id = DocumentId::learning(&self.ns);
        let c1 = self.storage.doc(&DocumentId::course(&learning_id, "c1"));
        if let Ok(p) = course::read(&c1) {
            assert_eq!(
                p.time_spent_secs, self.time_added,
                "seed {seed}: time spent"
            );
            assert_eq!(p.attempt, self.max_attempt, "seed {seed}: attempt");
            let best = self
                .progress
                .get(&attempt_key("c1", p.attempt))
                .copied()
                .unwrap_or(0.0);
            assert_eq!(p.progress, best, "seed {seed}: progress");
            let done: BTreeSet<String> = p.completed.keys().map(|l| format!("c1/{l}")).collect();
            assert_eq!(
                done,
                self.completed
                    .get(&attempt_key("c1", p.attempt))
                    .cloned()
                    .unwrap_or_default(),
                "seed {seed}: completed lessons"
            );
        }
        let index = self.storage.doc(&learning_id);
        for c in &self.enrolled {
            assert!(
                learning::enrollment(&index, c).unwrap().is_some(),
                "seed {seed}: enrollment {c} lost"
            );
        }
        let prefs = self.storage.doc(&DocumentId::preferences(&self.ns));
        let _ = preferences::all(&prefs).unwrap();
        assert_eq!(
            docs::identify(&prefs).map(|s| s.kind()),
            Some(docs::DocKind::Preferences)
        );
    }
}

/// Prints a frame for `SIM_TRACE=<document id prefix>` (replaying one seed).
fn trace(filter: &str, now: i64, dir: &str, conn: ConnId, device: usize, frame: &[u8]) {
    let msg = sync_core::wire::decode(frame);
    let line = match &msg {
        Ok(sync_core::wire::Message::Sync(m)) | Ok(sync_core::wire::Message::Request(m)) => {
            if !m.document_id.to_string().starts_with(filter) {
                return;
            }
            let sm = automerge::sync::Message::decode(&m.data).unwrap();
            format!(
                "{} heads {:?} need {} changes {}",
                m.document_id,
                sm.heads
                    .iter()
                    .map(|h| h.to_string()[..6].to_string())
                    .collect::<Vec<_>>(),
                sm.need.len(),
                sm.changes.len()
            )
        }
        Ok(other) => other.type_name().to_string(),
        Err(e) => format!("{e}"),
    };
    eprintln!("{now} {dir} {conn:?} dev{device}: {line}");
}

fn attempt_of(client: &Client, course_id: &str) -> u32 {
    client
        .enrollments()
        .ok()
        .and_then(|v| v.into_iter().find(|e| e.course_id == course_id))
        .and_then(|e| e.progress)
        .map(|p| p.attempt)
        .unwrap_or_else(|| {
            // Not enrolled yet: read the course document directly.
            client
                .document(&DocumentId::course(
                    &DocumentId::learning(&UserNamespace::from_bytes([3; 16])),
                    course_id,
                ))
                .and_then(|d| course::read(d).ok())
                .map(|p| p.attempt)
                .unwrap_or(1)
        })
}

fn attempt_key(course_id: &str, attempt: u32) -> u32 {
    // Only c1's attempts are tracked precisely; c2 shares the map under a disjoint range.
    if course_id == "c1" {
        attempt
    } else {
        1_000_000 + attempt
    }
}

fn run_seed(seed: u64) {
    let mut sim = Sim::new(seed);
    sim.run();
    sim.verify(seed);
}

/// Runs this shard's share of the seeds (the suite splits them over four tests so that they
/// run in parallel).
fn run_shard(shard: u64) {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        if seed % SHARDS == shard {
            run_seed(seed);
        }
        return;
    }
    let schedules: u64 = std::env::var("SIM_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    for seed in (shard..schedules).step_by(SHARDS as usize) {
        let result = std::panic::catch_unwind(|| run_seed(seed));
        if let Err(e) = result {
            eprintln!("simulation failed for seed {seed}; replay with SIM_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

const SHARDS: u64 = 4;

#[test]
fn simulated_schedules_converge_and_lose_nothing_0() {
    run_shard(0);
}

#[test]
fn simulated_schedules_converge_and_lose_nothing_1() {
    run_shard(1);
}

#[test]
fn simulated_schedules_converge_and_lose_nothing_2() {
    run_shard(2);
}

#[test]
fn simulated_schedules_converge_and_lose_nothing_3() {
    run_shard(3);
}
