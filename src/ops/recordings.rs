//! Session recordings: the index (who, which host, when, how it ended) and the casts, for
//! callers holding `session:read`. Recording itself is `recordings::Recorder`'s.

use std::io::Read;

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Caller, Core, OpError, OpResult};
use crate::auth::Ability;
use crate::store::{self, PageRequest, recordings::RecordingRow};

/// A recorded terminal session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Recording {
    pub id: Uuid,
    /// The live session it recorded (as `GET /v1/admin/sessions` listed it).
    pub session_id: Uuid,
    pub host_id: Uuid,
    pub short_id: String,
    pub username: String,
    /// `ssh` or `browser` (the browser terminal).
    pub kind: String,
    /// `recording`, `stored`, or `failed` (the session went on unrecorded from some point).
    pub status: String,
    /// Whether keystrokes are in it.
    pub with_input: bool,
    /// Size of the compressed cast.
    pub bytes: i64,
    /// Whether it stopped at its size cap (`SLUICE_RECORDING_MAX_MB`) while the session went
    /// on: it holds the session's beginning.
    pub truncated: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
}

impl From<RecordingRow> for Recording {
    fn from(r: RecordingRow) -> Self {
        Recording {
            id: r.id,
            session_id: r.session_id,
            host_id: r.host_id,
            short_id: r.short_id,
            username: r.username,
            kind: r.kind,
            status: r.status,
            with_input: r.with_input,
            bytes: r.bytes,
            truncated: r.truncated,
            started_at: r.started_at,
            ended_at: r.ended_at,
        }
    }
}

/// Recordings, newest first, optionally of one host.
pub async fn list(
    core: &Core,
    caller: &Caller,
    host_id: Option<Uuid>,
    page: PageRequest,
) -> OpResult<(Vec<Recording>, i64)> {
    caller.require(Ability::SessionRead)?;
    let mut db = core.store.acquire().await?;
    let (rows, total) = store::recordings::list(db.conn(), host_id, page).await?;
    Ok((rows.into_iter().map(Recording::from).collect(), total))
}

async fn find(core: &Core, caller: &Caller, id: Uuid) -> OpResult<RecordingRow> {
    caller.require(Ability::SessionRead)?;
    let mut db = core.store.acquire().await?;
    store::recordings::get(db.conn(), id)
        .await?
        .ok_or(OpError::NotFound("recording"))
}

/// One recording's record.
pub async fn get(core: &Core, caller: &Caller, id: Uuid) -> OpResult<Recording> {
    Ok(find(core, caller, id).await?.into())
}

/// A recording's cast (asciicast v2, uncompressed), read as it is handed on: decompressed a
/// chunk at a time, never whole into memory, however large the recording.
pub struct Cast(flate2::read::GzDecoder<std::fs::File>);

/// Bytes of a cast read at a time, and chunks waiting for a slow client.
const CAST_CHUNK: usize = 64 * 1024;
const CAST_CHUNKS_QUEUED: usize = 4;

impl std::io::Read for Cast {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Cast {
    /// The cast as a stream of chunks (an HTTP body): a blocking reader feeds a queue of a few
    /// chunks, so at most a quarter of a mebibyte of it is in memory while a client reads.
    pub fn into_stream(
        mut self,
    ) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(CAST_CHUNKS_QUEUED);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CAST_CHUNK];
            loop {
                let chunk = match self.0.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => Ok(bytes::Bytes::copy_from_slice(&buf[..n])),
                    Err(e) => Err(e),
                };
                let end = chunk.is_err();
                if tx.blocking_send(chunk).is_err() || end {
                    return;
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
    }
}

/// The cast itself, once the recording has ended.
pub async fn cast(core: &Core, caller: &Caller, id: Uuid) -> OpResult<Cast> {
    let row = find(core, caller, id).await?;
    if row.status == "recording" {
        return Err(OpError::Conflict(
            "the session is still being recorded; download it once it ends".into(),
        ));
    }
    let path = core.recordings_dir.join(&row.file);
    let file = tokio::task::spawn_blocking(move || std::fs::File::open(&path))
        .await
        .map_err(|e| OpError::Unavailable(format!("cannot read the recording: {e}")))?
        .map_err(|e| OpError::Unavailable(format!("cannot read the recording: {e}")))?;
    Ok(Cast(flate2::read::GzDecoder::new(file)))
}
