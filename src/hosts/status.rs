//! The host status machine: which lifecycle step may be asked for in which status, what status
//! a host shows while a step runs and after it, and which statuses count as live. Pure: the
//! domain operations and the task worker ask it; nothing here touches Docker or the database.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::tasks::Kind;

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    Pending,
    Provisioning,
    Running,
    Stopped,
    Suspended,
    Error,
    Deleting,
}

/// Why a host's status refuses what was asked; the sentence follows the host's short id
/// ("host k3x9m2qa is being deleted").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusConflict {
    #[error("is being deleted")]
    Deleting,
    #[error("is suspended: unsuspend it first")]
    Suspended,
    #[error("is {0}, not suspended")]
    NotSuspended(HostStatus),
}

impl HostStatus {
    pub const ALL: [HostStatus; 7] = [
        HostStatus::Pending,
        HostStatus::Provisioning,
        HostStatus::Running,
        HostStatus::Stopped,
        HostStatus::Suspended,
        HostStatus::Error,
        HostStatus::Deleting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Pending => "pending",
            HostStatus::Provisioning => "provisioning",
            HostStatus::Running => "running",
            HostStatus::Stopped => "stopped",
            HostStatus::Suspended => "suspended",
            HostStatus::Error => "error",
            HostStatus::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }

    /// Whether a lifecycle step may be queued now. Deleting again is allowed (the new task
    /// finds whatever is left); a suspended host neither starts nor rebuilds until unsuspended.
    pub fn may_queue(self, step: Kind) -> Result<(), StatusConflict> {
        match (self, step) {
            (HostStatus::Deleting, Kind::Delete) => Ok(()),
            (HostStatus::Deleting, _) => Err(StatusConflict::Deleting),
            (HostStatus::Suspended, Kind::Start | Kind::Rebuild) => Err(StatusConflict::Suspended),
            _ => Ok(()),
        }
    }

    /// The status a host shows as soon as a step is asked for: a delete shows at once.
    pub fn on_request(step: Kind) -> Option<HostStatus> {
        (step == Kind::Delete).then_some(HostStatus::Deleting)
    }

    /// The status a host shows while the step runs.
    pub fn during(step: Kind) -> Option<HostStatus> {
        match step {
            Kind::Create | Kind::Rebuild => Some(HostStatus::Provisioning),
            Kind::Delete => Some(HostStatus::Deleting),
            _ => None,
        }
    }

    /// The status after the step succeeded (`None`: unchanged, or the host is gone).
    pub fn after(step: Kind) -> Option<HostStatus> {
        match step {
            Kind::Create | Kind::Start | Kind::Rebuild => Some(HostStatus::Running),
            Kind::Stop => Some(HostStatus::Stopped),
            Kind::Suspend => Some(HostStatus::Suspended),
            Kind::Delete | Kind::BindEgress => None,
        }
    }

    /// The status after a step failed.
    pub const FAILED: HostStatus = HostStatus::Error;

    /// Lifting a suspension leaves the host stopped; only a suspended host can be unsuspended.
    pub fn unsuspended(self) -> Result<HostStatus, StatusConflict> {
        match self {
            HostStatus::Suspended => Ok(HostStatus::Stopped),
            other => Err(StatusConflict::NotSuspended(other)),
        }
    }

    /// Whether the host's settings (binding, SSH password) may still change.
    pub fn may_change(self) -> Result<(), StatusConflict> {
        match self {
            HostStatus::Deleting => Err(StatusConflict::Deleting),
            _ => Ok(()),
        }
    }

    /// Running or being made: a change of egress must reach it now, by a task.
    pub fn is_live(self) -> bool {
        matches!(self, HostStatus::Running | HostStatus::Provisioning)
    }

    /// Whether a user's entry (short link, bootstrap) should start the host: only a stopped
    /// one; a suspended or failed host waits for an administrator.
    pub fn starts_on_entry(self) -> bool {
        self == HostStatus::Stopped
    }
}

impl std::fmt::Display for HostStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Stored as its lower-case name on both backends.
impl<DB: sqlx::Database> sqlx::Type<DB> for HostStatus
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for HostStatus
where
    &'r str: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <&str as sqlx::Decode<DB>>::decode(value)?;
        HostStatus::parse(s).ok_or_else(|| format!("unknown host status {s:?}").into())
    }
}

impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for HostStatus
where
    &'static str: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&'static str as sqlx::Encode<DB>>::encode(self.as_str(), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in HostStatus::ALL {
            assert_eq!(HostStatus::parse(s.as_str()), Some(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(HostStatus::parse("Running"), None);
    }

    #[test]
    fn a_deleting_host_takes_nothing_but_another_delete() {
        for step in Kind::ALL {
            let r = HostStatus::Deleting.may_queue(step);
            if step == Kind::Delete {
                assert_eq!(r, Ok(()));
            } else {
                assert_eq!(r, Err(StatusConflict::Deleting), "{step:?}");
            }
        }
        assert_eq!(
            HostStatus::Deleting.may_change(),
            Err(StatusConflict::Deleting)
        );
    }

    #[test]
    fn a_suspended_host_neither_starts_nor_rebuilds_but_can_be_stopped_or_deleted() {
        let s = HostStatus::Suspended;
        assert_eq!(s.may_queue(Kind::Start), Err(StatusConflict::Suspended));
        assert_eq!(s.may_queue(Kind::Rebuild), Err(StatusConflict::Suspended));
        for ok in [Kind::Stop, Kind::Suspend, Kind::Delete, Kind::BindEgress] {
            assert_eq!(s.may_queue(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(s.unsuspended(), Ok(HostStatus::Stopped));
        assert!(!s.starts_on_entry());
    }

    #[test]
    fn every_other_status_takes_every_step() {
        for s in [
            HostStatus::Pending,
            HostStatus::Provisioning,
            HostStatus::Running,
            HostStatus::Stopped,
            HostStatus::Error,
        ] {
            for step in Kind::ALL {
                assert_eq!(s.may_queue(step), Ok(()), "{s} {step:?}");
            }
            assert_eq!(s.may_change(), Ok(()));
            assert_eq!(s.unsuspended(), Err(StatusConflict::NotSuspended(s)));
        }
    }

    #[test]
    fn steps_move_the_host_through_the_documented_statuses() {
        assert_eq!(
            HostStatus::on_request(Kind::Delete),
            Some(HostStatus::Deleting)
        );
        assert_eq!(HostStatus::on_request(Kind::Start), None);
        assert_eq!(
            HostStatus::during(Kind::Create),
            Some(HostStatus::Provisioning)
        );
        assert_eq!(
            HostStatus::during(Kind::Rebuild),
            Some(HostStatus::Provisioning)
        );
        assert_eq!(HostStatus::during(Kind::Stop), None);
        for up in [Kind::Create, Kind::Start, Kind::Rebuild] {
            assert_eq!(HostStatus::after(up), Some(HostStatus::Running));
        }
        assert_eq!(HostStatus::after(Kind::Stop), Some(HostStatus::Stopped));
        assert_eq!(
            HostStatus::after(Kind::Suspend),
            Some(HostStatus::Suspended)
        );
        assert_eq!(HostStatus::after(Kind::BindEgress), None);
        assert_eq!(HostStatus::after(Kind::Delete), None);
    }

    #[test]
    fn only_running_or_provisioning_hosts_are_live_and_only_stopped_ones_start_on_entry() {
        let live: Vec<_> = HostStatus::ALL
            .into_iter()
            .filter(|s| s.is_live())
            .collect();
        assert_eq!(live, [HostStatus::Provisioning, HostStatus::Running]);
        let entry: Vec<_> = HostStatus::ALL
            .into_iter()
            .filter(|s| s.starts_on_entry())
            .collect();
        assert_eq!(entry, [HostStatus::Stopped]);
    }
}
