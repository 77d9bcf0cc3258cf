//! The entry flows' decisions, shared by the short link (`/v1/entry/{short}/auth`) and the
//! bootstrap (`/v1/bootstrap/sessions`): which of a user's hosts they mean, and, once
//! `sshproxy::login` has verified them, whether they go in now, wait for their host to start
//! (started for them if it is stopped), or are refused and why. The SSH proxy applies the
//! same `login::Entrant::refusal` at its door.

use uuid::Uuid;

use super::{Caller, Core, Face, OpError, OpResult};
use crate::auth::Principal;
use crate::sshproxy::login::{Entrant, Refusal};
use crate::store::hosts::HostRow;

/// What a verified entrant gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The host runs: go in.
    Ready,
    /// The host is starting (the task bringing it up, when there is one).
    Starting(Option<Uuid>),
}

/// Decides for a verified entrant who came through `door` (`entry:k3x9m2qa`,
/// `bootstrap:alice`): in, starting (a stopped host is started), or refused with the reason.
pub async fn admit(
    core: &Core,
    entrant: &Entrant,
    door: String,
    source: Option<String>,
) -> OpResult<Admission> {
    match entrant.refusal(crate::clock::now()) {
        None => Ok(Admission::Ready),
        Some(Refusal::HostStopped | Refusal::HostStarting) => {
            let Some(owner) = entrant.host.user_id else {
                return Ok(Admission::Starting(None));
            };
            let caller = Caller::new(
                Principal::Entrant {
                    user_id: owner,
                    door,
                },
                source,
                Face::Api,
            );
            let task = super::hosts::start_on_entry(core, &caller, &entrant.host).await?;
            Ok(Admission::Starting(task))
        }
        Some(r) => {
            let message = entrant.explain(&r, None);
            Err(match r {
                Refusal::AccountInactive(_) | Refusal::HostSuspended => OpError::Forbidden(message),
                _ => OpError::Conflict(message),
            })
        }
    }
}

/// The host a user means: the one named, or their only one.
pub fn choose_host(username: &str, hosts: &[HostRow], asked: Option<&str>) -> OpResult<HostRow> {
    match (asked, hosts) {
        (Some(short), _) => hosts
            .iter()
            .find(|h| h.short_id == short)
            .cloned()
            .ok_or(OpError::NotFound("host")),
        (None, []) => Err(OpError::Forbidden(format!(
            "account {username} has no host: ask your administrator"
        ))),
        (None, [only]) => Ok(only.clone()),
        (None, many) => Err(OpError::Conflict(format!(
            "account {username} has {} hosts; name one with \"host\" ({})",
            many.len(),
            many.iter()
                .map(|h| h.short_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::HostStatus;

    fn host(short: &str) -> HostRow {
        let now = crate::clock::now();
        HostRow {
            id: Uuid::now_v7(),
            short_id: short.into(),
            user_id: None,
            username: None,
            status: HostStatus::Running,
            status_reason: None,
            memory_mb: 1024,
            cpus: 1.0,
            pids_limit: 512,
            ssh_password_hash: String::new(),
            image: None,
            desktop: false,
            account_uid: Some(20_000),
            binding_id: None,
            egress_ip_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_user_means_their_only_host_or_the_one_they_name() {
        let a = host("aaaaaaaa");
        let b = host("bbbbbbbb");
        assert_eq!(
            choose_host("u", std::slice::from_ref(&a), None).unwrap().id,
            a.id
        );
        assert_eq!(
            choose_host("u", &[a.clone(), b.clone()], Some("bbbbbbbb"))
                .unwrap()
                .id,
            b.id
        );
        let many = choose_host("u", &[a.clone(), b.clone()], None).unwrap_err();
        assert!(
            matches!(&many, OpError::Conflict(m) if m.contains("aaaaaaaa, bbbbbbbb")),
            "{many}"
        );
        assert!(matches!(
            choose_host("u", &[], None),
            Err(OpError::Forbidden(_))
        ));
        assert!(matches!(
            choose_host("u", &[a], Some("cccccccc")),
            Err(OpError::NotFound(_))
        ));
    }
}
