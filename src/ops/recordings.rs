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

/// The cast itself (asciicast v2, uncompressed), once it has ended.
pub async fn cast(core: &Core, caller: &Caller, id: Uuid) -> OpResult<Vec<u8>> {
    let row = find(core, caller, id).await?;
    if row.status == "recording" {
        return Err(OpError::Conflict(
            "the session is still being recorded; download it once it ends".into(),
        ));
    }
    let path = core.recordings_dir.join(&row.file);
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(file).read_to_end(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })
    .await
    .map_err(|e| OpError::Unavailable(format!("cannot read the recording: {e}")))?
    .map_err(|e| OpError::Unavailable(format!("cannot read the recording: {e}")))
}
