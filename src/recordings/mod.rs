//! Session recording, opt-in per install (`SLUICE_RECORD_SESSIONS`): terminal sessions (a
//! session channel with a PTY, through the SSH proxy or the browser terminal) are written as
//! asciicast v2 (`asciinema play` plays them): the header with the terminal's size, then the
//! program's output and every resize; the user's keystrokes only with `SLUICE_RECORD_INPUT`.
//! Each cast is a gzip file under `<data dir>/recordings`, indexed in the `recordings` table,
//! listed and downloaded through the API (`session:read`), and removed after the retention.
//!
//! A recording never holds a session up: frames go through a queue bounded in bytes to a
//! writer on a blocking thread, and when the writer cannot keep up or the disk refuses, the
//! recording is marked failed (an event says so) while the session goes on untouched. Each
//! recording stops at a size cap (`SLUICE_RECORDING_MAX_MB` of cast; it is then `truncated`,
//! an event says so), and all of them share a disk budget (`SLUICE_RECORDINGS_DISK_BUDGET_MB`):
//! past it, the recordings that ended first are removed, each with an event.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::events::{self, NewEvent};
use crate::store::{self, Store, recordings::RecordingRow};

/// Frames a recording may have waiting for its writer before it gives up...
const QUEUE: usize = 4096;
/// ...and bytes of them: a session's output arrives in chunks of up to 64 KiB.
const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// How often the retention sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How an install records.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whether the users' keystrokes are recorded too.
    pub input: bool,
    /// How long a recording is kept after it ends.
    pub retention: Duration,
    /// Bytes of cast (uncompressed, as downloaded and played) a recording stops at.
    pub max_bytes: u64,
    /// Bytes on disk all ended recordings may take together; the oldest go first.
    pub disk_budget: u64,
}

/// The install's recorder (present only when recording is on).
pub struct Recorder {
    dir: PathBuf,
    store: Store,
    policy: Policy,
}

/// Who and what a session is, for its recordings.
#[derive(Debug, Clone)]
pub struct Subject {
    pub session_id: Uuid,
    pub host_id: Uuid,
    pub short_id: String,
    pub username: String,
    /// `ssh` or `browser`.
    pub kind: &'static str,
}

enum Frame {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Resize(u32, u32),
}

impl Frame {
    /// Bytes it holds while queued.
    fn len(&self) -> usize {
        match self {
            Frame::Output(d) | Frame::Input(d) => d.len(),
            Frame::Resize(..) => 8,
        }
    }
}

/// A recording in progress; ends when dropped.
pub struct Recording {
    tx: Option<mpsc::Sender<(f64, Frame)>>,
    started: Instant,
    input: bool,
    failed: Arc<AtomicBool>,
    /// Set by the writer when the cast reached its cap: nothing more is queued.
    capped: Arc<AtomicBool>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
}

/// How a cast's writing ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Whole,
    /// Stopped at the size cap.
    Capped,
}

impl Recorder {
    pub fn new(dir: PathBuf, store: Store, policy: Policy) -> Arc<Recorder> {
        Arc::new(Recorder { dir, store, policy })
    }

    /// Starts recording a terminal of `width` x `height` running `term`. A recording that
    /// cannot start is an event, and the session goes on unrecorded.
    pub async fn start(
        self: &Arc<Self>,
        subject: &Subject,
        width: u32,
        height: u32,
        term: &str,
    ) -> Option<Recording> {
        let id = Uuid::now_v7();
        let file = format!("{id}.cast.gz");
        let started_at = crate::clock::now();
        let header = json!({
            "version": 2,
            "width": width.max(1),
            "height": height.max(1),
            "timestamp": started_at.unix_timestamp(),
            "title": format!("{} on host {}", subject.username, subject.short_id),
            "env": {"TERM": term, "SHELL": "/bin/bash"},
        });
        let opened = std::fs::DirBuilder::new()
            .recursive(true)
            .create(&self.dir)
            .and_then(|()| {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(self.dir.join(&file))
            });
        let out = match opened {
            Ok(f) => f,
            Err(e) => {
                self.failed(
                    subject,
                    None,
                    &format!("cannot open the recording file: {e}"),
                )
                .await;
                return None;
            }
        };
        let row = RecordingRow {
            id,
            session_id: subject.session_id,
            host_id: subject.host_id,
            short_id: subject.short_id.clone(),
            username: subject.username.clone(),
            kind: subject.kind.into(),
            file: file.clone(),
            status: "recording".into(),
            with_input: self.policy.input,
            bytes: 0,
            started_at,
            ended_at: None,
            truncated: false,
        };
        let inserted = async {
            let mut db = self.store.acquire().await?;
            store::recordings::insert(db.conn(), &row).await
        }
        .await;
        if let Err(e) = inserted {
            let _ = std::fs::remove_file(self.dir.join(&file));
            self.failed(subject, None, &format!("cannot index the recording: {e}"))
                .await;
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let failed = Arc::new(AtomicBool::new(false));
        let capped = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = tokio::task::spawn_blocking({
            let (failed, capped, queued) = (failed.clone(), capped.clone(), queued.clone());
            let max = self.policy.max_bytes;
            move || write_cast(out, &header, rx, &failed, &capped, &queued, max)
        });
        let me = self.clone();
        let subject = subject.clone();
        let path = self.dir.join(&file);
        let flag = failed.clone();
        tokio::spawn(async move {
            let written = writer.await;
            let truncated = matches!(written, Ok(Ok(Written::Capped)));
            let (status, why) = match written {
                Ok(Ok(_)) if !flag.load(Ordering::SeqCst) => ("stored", None),
                Ok(Ok(_)) => (
                    "failed",
                    Some("the recording fell behind the session and stopped".to_string()),
                ),
                Ok(Err(e)) => ("failed", Some(format!("cannot write the recording: {e}"))),
                Err(e) => ("failed", Some(format!("the recording's writer ended: {e}"))),
            };
            let bytes = std::fs::metadata(&path)
                .map(|m| m.len() as i64)
                .unwrap_or(0);
            if status == "stored" {
                crate::metrics::METRICS
                    .sessions_recorded
                    .get_or_create(&crate::metrics::OutcomeLabels { outcome: "stored" })
                    .inc();
            }
            if let Ok(mut db) = me.store.acquire().await {
                let _ = store::recordings::finish(
                    db.conn(),
                    id,
                    status,
                    bytes,
                    truncated,
                    crate::clock::now(),
                )
                .await;
                if truncated {
                    let _ = events::record(
                        db.conn(),
                        NewEvent::new("sluice", "recording.truncated", "session")
                            .target(subject.session_id)
                            .host(subject.host_id)
                            .details(json!({"recording_id": id, "short_id": subject.short_id,
                                "cap_bytes": me.policy.max_bytes})),
                    )
                    .await;
                }
            }
            if let Some(why) = why {
                me.failed(&subject, Some(id), &why).await;
            }
            me.keep_within_budget().await;
        });
        Some(Recording {
            tx: Some(tx),
            started: Instant::now(),
            input: self.policy.input,
            failed,
            capped,
            queued,
        })
    }

    async fn failed(&self, subject: &Subject, id: Option<Uuid>, why: &str) {
        tracing::warn!(session = %subject.session_id, host = %subject.short_id, reason = why, "session recording failed");
        crate::metrics::METRICS
            .sessions_recorded
            .get_or_create(&crate::metrics::OutcomeLabels { outcome: "failed" })
            .inc();
        if let Ok(mut db) = self.store.acquire().await {
            let _ = events::record(
                db.conn(),
                NewEvent::new("sluice", "recording.failed", "session")
                    .target(subject.session_id)
                    .host(subject.host_id)
                    .details(
                        json!({"recording_id": id, "short_id": subject.short_id, "reason": why}),
                    ),
            )
            .await;
        }
    }

    /// Removes the recordings that ended first until all ended ones fit the disk budget, each
    /// removal an event (`recording.expired`).
    pub async fn keep_within_budget(&self) {
        let Ok(mut db) = self.store.acquire().await else {
            return;
        };
        let budget = i64::try_from(self.policy.disk_budget).unwrap_or(i64::MAX);
        loop {
            let used = match store::recordings::ended_bytes(db.conn()).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the recordings' disk use");
                    return;
                }
            };
            if used <= budget {
                return;
            }
            let Ok(Some(oldest)) = store::recordings::oldest_ended(db.conn()).await else {
                return;
            };
            if store::recordings::delete(db.conn(), oldest.id)
                .await
                .is_err()
            {
                return;
            }
            let _ = std::fs::remove_file(self.dir.join(&oldest.file));
            tracing::info!(recording = %oldest.id, bytes = oldest.bytes, "a recording expired: the recordings' disk budget is full");
            let _ = events::record(
                db.conn(),
                NewEvent::new("sluice", "recording.expired", "session")
                    .target(oldest.session_id)
                    .host(oldest.host_id)
                    .details(
                        json!({"recording_id": oldest.id, "short_id": oldest.short_id,
                        "bytes": oldest.bytes, "reason": "the recordings' disk budget is full",
                        "budget_bytes": self.policy.disk_budget}),
                    ),
            )
            .await;
        }
    }

    /// Where a recording's file is.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Marks the recordings an earlier process left unfinished (it stopped mid-session) as
    /// failed, so they age out like the others. Run before sessions are served.
    pub async fn recover(&self) {
        if let Ok(mut db) = self.store.acquire().await
            && let Ok(n) = store::recordings::fail_unfinished(db.conn(), crate::clock::now()).await
            && n > 0
        {
            tracing::warn!(
                count = n,
                "recordings cut short by the last stop are marked failed"
            );
        }
    }

    /// Removes recordings past the retention, every hour until `stop`.
    pub fn sweep(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        tokio::spawn(async move {
            loop {
                let cutoff = crate::clock::now()
                    - time::Duration::seconds(self.policy.retention.as_secs() as i64);
                if let Ok(mut db) = self.store.acquire().await
                    && let Ok(files) =
                        store::recordings::delete_ended_before(db.conn(), cutoff).await
                {
                    for f in &files {
                        let _ = std::fs::remove_file(self.dir.join(f));
                    }
                    if !files.is_empty() {
                        tracing::info!(
                            count = files.len(),
                            "recordings past their retention removed"
                        );
                    }
                }
                self.keep_within_budget().await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(SWEEP_EVERY) => {}
                }
            }
        });
    }
}

impl Recording {
    fn send(&self, frame: Frame) {
        if self.failed.load(Ordering::Relaxed) || self.capped.load(Ordering::Relaxed) {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let size = frame.len();
        // Never wait: the session matters more than its recording. A writer that falls more
        // than QUEUE_BYTES behind fails the recording instead of growing Sluice.
        if self.queued.fetch_add(size, Ordering::SeqCst) + size > QUEUE_BYTES {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            self.failed.store(true, Ordering::SeqCst);
            return;
        }
        let at = self.started.elapsed().as_secs_f64();
        if tx.try_send((at, frame)).is_err() {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            if !self.capped.load(Ordering::SeqCst) {
                self.failed.store(true, Ordering::SeqCst);
            }
        }
    }

    /// What the program wrote to the terminal.
    pub fn output(&self, data: &[u8]) {
        self.send(Frame::Output(data.to_vec()));
    }

    /// What the user typed (kept only when the install records input).
    pub fn input(&self, data: &[u8]) {
        if self.input {
            self.send(Frame::Input(data.to_vec()));
        }
    }

    /// The terminal's new size.
    pub fn resize(&self, width: u32, height: u32) {
        self.send(Frame::Resize(width, height));
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        // Closing the queue ends the writer, which finishes the file.
        self.tx.take();
    }
}

/// Bytes as text for the cast, carrying an incomplete UTF-8 sequence over to the next chunk.
#[derive(Default)]
struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    fn push(&mut self, data: &[u8]) -> String {
        self.0.extend_from_slice(data);
        let valid = match std::str::from_utf8(&self.0) {
            Ok(_) => self.0.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.0.len(),
        };
        let rest = self.0.split_off(valid);
        let text = String::from_utf8_lossy(&self.0).into_owned();
        self.0 = rest;
        text
    }
}

/// Writes the cast from the queue until the recording ends or the cast reaches `max` bytes
/// (uncompressed); then a last line says the recording stopped, and the queue is closed.
fn write_cast(
    file: std::fs::File,
    header: &serde_json::Value,
    mut rx: mpsc::Receiver<(f64, Frame)>,
    failed: &AtomicBool,
    capped: &AtomicBool,
    queued: &AtomicUsize,
    max: u64,
) -> std::io::Result<Written> {
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(file),
        flate2::Compression::default(),
    );
    let first = format!("{header}\n");
    gz.write_all(first.as_bytes())?;
    let mut written = first.len() as u64;
    let mut outcome = Written::Whole;
    let (mut out, mut inp) = (Utf8Carry::default(), Utf8Carry::default());
    while let Some((at, frame)) = rx.blocking_recv() {
        queued.fetch_sub(frame.len(), Ordering::SeqCst);
        let line = match frame {
            Frame::Output(d) => json!([at, "o", out.push(&d)]),
            Frame::Input(d) => json!([at, "i", inp.push(&d)]),
            Frame::Resize(w, h) => json!([at, "r", format!("{w}x{h}")]),
        };
        let line = format!("{line}\n");
        if written + line.len() as u64 > max {
            // The cap: the session goes on unrecorded from here, and the cast says so.
            capped.store(true, Ordering::SeqCst);
            rx.close();
            let note = json!([
                at,
                "o",
                format!(
                    "\r\n[sluice: the recording stopped here, at its size cap of {max} bytes]\r\n"
                )
            ]);
            gz.write_all(format!("{note}\n").as_bytes())?;
            outcome = Written::Capped;
            break;
        }
        if let Err(e) = gz.write_all(line.as_bytes()) {
            failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        written += line.len() as u64;
    }
    let mut w = gz.finish()?;
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_carried_whole() {
        let mut c = Utf8Carry::default();
        let e = "é".as_bytes();
        assert_eq!(c.push(&[b'a', e[0]]), "a");
        assert_eq!(c.push(&[e[1], b'b']), "éb");
        // Bytes that can never be UTF-8 are replaced, not held.
        assert_eq!(c.push(&[0xff, b'c']), "\u{fffd}c");
    }
}
