//! Who may enter which host: the SSH user name picks the host (a short id, or the owner's
//! user name when they have exactly one host), the credential proves the person (the host's
//! SSH password, a one-time entry credential, or one of the owner's public keys), and the
//! account and host states decide whether they may go in now. Used by the SSH proxy and by
//! the entry API, so both say the same thing for the same situation.

use russh::keys::ssh_key::PublicKey;
use time::OffsetDateTime;

use super::credentials::EntryCredentials;
use crate::auth::AuthError;
use crate::auth::password;
use crate::hosts::{HostStatus, is_short_id};
use crate::store::hosts::HostRow;
use crate::store::users::UserRow;
use crate::store::{self, Store};
use crate::users::{Role, UserStatus};

/// What the client offered.
pub enum Credential<'a> {
    /// The host's SSH password or a one-time entry credential.
    Password(&'a str),
    /// The host's SSH password only (what a person types into a short link).
    HostPassword(&'a str),
    PublicKey(&'a PublicKey),
}

/// How an entrant proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Password,
    Entry,
    PublicKey,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Entry => "entry",
            Method::PublicKey => "publickey",
        }
    }
}

/// Someone whose credential matched a host.
#[derive(Debug, Clone)]
pub struct Entrant {
    pub user: UserRow,
    pub host: HostRow,
    pub method: Method,
}

/// The outcome of a credential check.
#[derive(Debug)]
pub enum Check {
    /// No such host or user, or the credential does not match: the client learns nothing more.
    Denied,
    /// The credential is right but the user name names several hosts.
    Ambiguous {
        username: String,
        hosts: Vec<String>,
    },
    Verified(Box<Entrant>),
}

/// Why a verified entrant cannot go in now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    AccountInactive(String),
    HostStopped,
    HostSuspended,
    HostStarting,
    HostBroken(String),
}

impl Entrant {
    /// Why the entrant may not enter now, if they may not.
    pub fn refusal(&self, now: OffsetDateTime) -> Option<Refusal> {
        let status = UserStatus::parse(&self.user.status).unwrap_or(UserStatus::Disabled);
        if status != UserStatus::Active {
            return Some(Refusal::AccountInactive(status.as_str().into()));
        }
        if self.user.expires_at.is_some_and(|t| t <= now) {
            return Some(Refusal::AccountInactive("expired".into()));
        }
        match self.host.status {
            HostStatus::Running => None,
            HostStatus::Stopped => Some(Refusal::HostStopped),
            HostStatus::Suspended => Some(Refusal::HostSuspended),
            HostStatus::Pending | HostStatus::Provisioning => Some(Refusal::HostStarting),
            HostStatus::Deleting => Some(Refusal::HostBroken("is being deleted".into())),
            // The stored reason is for administrators; the user gets the short version.
            HostStatus::Error => Some(Refusal::HostBroken(
                "failed to start: ask your administrator".into(),
            )),
        }
    }

    /// The sentence the user reads for `refusal`; `start_hint` says how to start a stopped host.
    pub fn explain(&self, refusal: &Refusal, start_hint: Option<&str>) -> String {
        let short = &self.host.short_id;
        match refusal {
            Refusal::AccountInactive(s) => {
                format!(
                    "account {} is {s}: ask your administrator",
                    self.user.username
                )
            }
            Refusal::HostStopped => match start_hint {
                Some(hint) => format!("host {short} is stopped: start it with `{hint}`"),
                None => format!(
                    "host {short} is stopped: start it from the Sluice portal or with its short link"
                ),
            },
            Refusal::HostSuspended => {
                format!("host {short} is suspended: ask your administrator")
            }
            Refusal::HostStarting => format!("host {short} is starting: try again in a moment"),
            Refusal::HostBroken(why) => format!("host {short} {why}"),
        }
    }
}

/// Checks `credential` for the SSH user name `login`.
pub async fn check(
    store: &Store,
    entry: &EntryCredentials,
    login: &str,
    credential: Credential<'_>,
) -> Result<Check, AuthError> {
    let mut db = store.acquire().await?;
    let (user, hosts) = if is_short_id(login) {
        match store::hosts::get_by_short_id(db.conn(), login).await? {
            Some(h) => match h.user_id {
                Some(uid) => (store::users::get(db.conn(), uid).await?, vec![h]),
                None => (None, vec![]),
            },
            None => (None, vec![]),
        }
    } else {
        match store::users::get_by_username(db.conn(), login).await? {
            Some(u) if u.role == Role::User.as_str() => {
                let hosts = store::hosts::of_user(db.conn(), u.id).await?;
                (Some(u), hosts)
            }
            _ => (None, vec![]),
        }
    };
    // A key check reads the owner's keys now; nothing below holds the connection (password
    // hashing waits for its turn at the global gate and must not pin a pooled connection).
    let keys = match (&user, &credential) {
        (Some(u), Credential::PublicKey(_)) if !hosts.is_empty() => {
            store::ssh_keys::public_keys(db.conn(), u.id).await?
        }
        _ => vec![],
    };
    drop(db);
    let Some(user) = user.filter(|_| !hosts.is_empty()) else {
        if let Credential::Password(p) | Credential::HostPassword(p) = credential {
            password::verify_decoy(p).await?;
        }
        return Ok(Check::Denied);
    };
    let verified = match credential {
        Credential::Password(p) | Credential::HostPassword(p) => {
            let one_time = matches!(credential, Credential::Password(_));
            let mut found = None;
            for h in hosts.iter().filter(|_| one_time) {
                if entry.redeem(h.id, p) {
                    found = Some((h.clone(), Method::Entry));
                    break;
                }
            }
            if found.is_none() {
                for h in &hosts {
                    if password::verify(p, &h.ssh_password_hash).await? {
                        found = Some((h.clone(), Method::Password));
                        break;
                    }
                }
            }
            found
        }
        Credential::PublicKey(offered) => {
            let owns = owns_key(&keys, offered.key_data());
            match (owns, hosts.as_slice()) {
                (true, [only]) => Some((only.clone(), Method::PublicKey)),
                (true, _) => {
                    return Ok(Check::Ambiguous {
                        username: user.username,
                        hosts: hosts.into_iter().map(|h| h.short_id).collect(),
                    });
                }
                (false, _) => None,
            }
        }
    };
    Ok(match verified {
        Some((host, method)) => Check::Verified(Box::new(Entrant { user, host, method })),
        None => Check::Denied,
    })
}

/// Whether `key` is one of the keys of the user who owns the host `login` names. Used to
/// answer a key offer before the client signs anything (the same lookup as [`check`], which
/// does no expensive work for a key).
pub async fn offers_owner_key(
    store: &Store,
    entry: &EntryCredentials,
    login: &str,
    key: &PublicKey,
) -> bool {
    matches!(
        check(store, entry, login, Credential::PublicKey(key)).await,
        Ok(Check::Verified(_) | Check::Ambiguous { .. })
    )
}

/// What a live session's login rested on; it is checked again while the session lasts, so a
/// session ends when its ground goes away.
#[derive(Debug, Clone)]
pub enum Proof {
    /// The host's SSH password (typed, or traded for a one-time entry credential): rotating
    /// it ends the session.
    HostPassword { hash: String },
    /// One of the owner's keys (its key data): removing the key ends the session.
    Key(russh::keys::ssh_key::public::KeyData),
    /// A browser terminal or desktop, opened from a signed-in page or with a ticket: it rests
    /// on the account and the host, and on the viewer's own sign-in (their login or API
    /// token), which the proxy re-checks (`Authenticator::still_holds`).
    Browser { viewer: crate::auth::Principal },
}

/// Whether `data` is one of `keys` (OpenSSH public-key lines).
fn owns_key(keys: &[String], data: &russh::keys::ssh_key::public::KeyData) -> bool {
    keys.iter()
        .any(|line| PublicKey::from_openssh(line).is_ok_and(|k| k.key_data() == data))
}

/// What live sessions of one account on one host stand on, read once for all of them.
pub enum Ground {
    /// Nobody may stay: the sentence says why.
    Gone(String),
    /// The account and host as they are now, and the owner's keys.
    Standing {
        entrant: Box<Entrant>,
        keys: Vec<String>,
    },
}

impl Ground {
    /// Reads the account, the host and the owner's keys. Account and host states are judged
    /// as at login ([`Entrant::refusal`]).
    pub async fn load(
        store: &Store,
        user_id: uuid::Uuid,
        host_id: uuid::Uuid,
    ) -> Result<Ground, crate::store::StoreError> {
        let mut db = store.acquire().await?;
        let Some(host) = store::hosts::get(db.conn(), host_id).await? else {
            return Ok(Ground::Gone("the host was deleted".into()));
        };
        let Some(user) = store::users::get(db.conn(), user_id).await? else {
            return Ok(Ground::Gone("the account was deleted".into()));
        };
        if host.user_id != Some(user.id) {
            return Ok(Ground::Gone("the host changed owner".into()));
        }
        let keys = store::ssh_keys::public_keys(db.conn(), user.id).await?;
        let entrant = Entrant {
            user,
            host,
            method: Method::Password,
        };
        if let Some(r) = entrant.refusal(crate::clock::now()) {
            return Ok(Ground::Gone(entrant.explain(&r, None)));
        }
        Ok(Ground::Standing {
            entrant: Box::new(entrant),
            keys,
        })
    }

    /// Why a session logged in with `proof` may not go on; `None` when it may.
    pub fn refuses(&self, proof: &Proof) -> Option<String> {
        let (entrant, keys) = match self {
            Ground::Gone(why) => return Some(why.clone()),
            Ground::Standing { entrant, keys } => (entrant, keys),
        };
        match proof {
            Proof::HostPassword { hash } if *hash != entrant.host.ssh_password_hash => {
                Some(format!(
                    "the SSH password of host {} was changed: log in again",
                    entrant.host.short_id
                ))
            }
            Proof::Key(data) if !owns_key(keys, data) => {
                Some("the key this session logged in with was removed".into())
            }
            _ => None,
        }
    }
}
