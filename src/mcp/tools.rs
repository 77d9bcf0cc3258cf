//! The catalogue of MCP tools: each a name an operator would use, a one-line description, the
//! ability its REST operation needs, a hint (read-only, additive or destructive), the JSON
//! schema of its arguments, and a call into the domain layer. Answers are JSON objects;
//! secrets appear only where REST shows them (once, on creation).

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::AppState;
use crate::auth::Ability;
use crate::ops::{self, Caller, OpError};
use crate::store::PageRequest;
use crate::store::events::EventFilter;
use crate::tasks::Kind;

/// What a tool does to the world, for the client's confirmations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    ReadOnly,
    Additive,
    Destructive,
}

/// One tool.
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub ability: Ability,
    pub hint: Hint,
    schema: fn() -> JsonObject,
}

/// Why a tool call did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Op(#[from] OpError),
    #[error("invalid arguments: {0}")]
    Arguments(String),
    #[error("{0}")]
    Refused(String),
}

fn schema<T: JsonSchema>() -> JsonObject {
    match serde_json::to_value(schemars::schema_for!(T)) {
        Ok(Value::Object(o)) => o,
        _ => JsonObject::new(),
    }
}

/// No arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// A host, by id or short id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostArg {
    /// The host's id (UUID) or its 8-character short id.
    pub host: String,
}

/// A host to rebuild.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RebuildArgs {
    /// The host's id (UUID) or its 8-character short id.
    pub host: String,
    /// Start with an empty home directory (default false: the home survives).
    pub wipe_home: Option<bool>,
    /// Rebuild into (true) or out of (false) desktop mode; omitted keeps the host's mode.
    pub desktop: Option<bool>,
}

/// A page of a list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageArgs {
    /// Page number, from 1 (default 1).
    pub page: Option<u32>,
    /// Items per page, 1-100 (default 20).
    pub per_page: Option<u32>,
}

/// Hosts to list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostListArgs {
    /// Only the hosts of this user (UUID).
    pub user_id: Option<String>,
    /// Only hosts in this status: pending, running, stopped, suspended, error, ...
    pub status: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// Something named by its UUID.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArg {
    /// The UUID.
    pub id: String,
}

/// Events to list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventArgs {
    /// Only events about this user (UUID).
    pub user_id: Option<String>,
    /// Only events about this host (UUID).
    pub host_id: Option<String>,
    /// Only this action, such as `host.created`.
    pub action: Option<String>,
    /// How many, newest first, 1-100 (default 20).
    pub limit: Option<u32>,
}

/// An egress, by id or label.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressArg {
    /// The egress's id (UUID) or its label (refused when several egresses share it).
    pub id: String,
}

/// An account, by id or user name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserArg {
    /// The account's id (UUID) or its user name.
    pub user: String,
}

/// An account's new expiry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiryArgs {
    /// The account's id (UUID) or its user name.
    pub user: String,
    /// RFC 3339 time in the future, such as 2030-01-31T12:00:00Z; null for no expiry.
    #[serde(deserialize_with = "ops::users::present")]
    #[schemars(required)]
    pub expires_at: Option<Option<String>>,
}

/// A host's recent container output.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogArgs {
    /// The host's id (UUID) or its 8-character short id.
    pub host: String,
    /// How many of the last lines, 1-1000 (default 100).
    pub tail: Option<u32>,
}

/// Tasks to list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskListArgs {
    /// Only tasks in this status: queued, running, succeeded or failed.
    pub status: Option<String>,
    /// Only the tasks of this host (id or short id).
    pub host: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// Recordings to list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingListArgs {
    /// Only the recordings of this host (id or short id).
    pub host: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

const TOOLS: &[ToolSpec] = &[
    ToolSpec {
        name: "dashboard_stats",
        description: "Counts of users, hosts by status, egresses and tasks.",
        ability: Ability::HostRead,
        hint: Hint::ReadOnly,
        schema: schema::<NoArgs>,
    },
    ToolSpec {
        name: "server_status",
        description: "The control plane's view of itself: whether Docker answers and its version, the managed images, hosts by status, tasks waiting and running.",
        ability: Ability::HostRead,
        hint: Hint::ReadOnly,
        schema: schema::<NoArgs>,
    },
    ToolSpec {
        name: "hosts_list",
        description: "List hosts (users' containers) with status, egress and access commands.",
        ability: Ability::HostRead,
        hint: Hint::ReadOnly,
        schema: schema::<HostListArgs>,
    },
    ToolSpec {
        name: "host_get",
        description: "Read one host by id or short id.",
        ability: Ability::HostRead,
        hint: Hint::ReadOnly,
        schema: schema::<HostArg>,
    },
    ToolSpec {
        name: "host_create",
        description: "Create a host for a user, optionally bound to an egress; answers its task_id and its SSH password (shown only here).",
        ability: Ability::HostWrite,
        hint: Hint::Additive,
        schema: schema::<ops::hosts::CreateHost>,
    },
    ToolSpec {
        name: "host_start",
        description: "Start a stopped host; answers the task_id to poll.",
        ability: Ability::HostWrite,
        hint: Hint::Additive,
        schema: schema::<HostArg>,
    },
    ToolSpec {
        name: "host_stop",
        description: "Stop a running host (its sessions end); answers the task_id to poll.",
        ability: Ability::HostWrite,
        hint: Hint::Destructive,
        schema: schema::<HostArg>,
    },
    ToolSpec {
        name: "host_rebuild",
        description: "Rebuild a host's container on the current image, keeping its home unless wipe_home; desktop moves it into or out of desktop mode; answers the task_id.",
        ability: Ability::HostWrite,
        hint: Hint::Destructive,
        schema: schema::<RebuildArgs>,
    },
    ToolSpec {
        name: "host_delete",
        description: "Delete a host with its container and home volume; answers the task_id.",
        ability: Ability::HostWrite,
        hint: Hint::Destructive,
        schema: schema::<HostArg>,
    },
    ToolSpec {
        name: "host_suspend",
        description: "Suspend a host: stop it and refuse starts and logins until it is unsuspended. Answers the task to poll.",
        ability: Ability::HostWrite,
        hint: Hint::Destructive,
        schema: schema::<HostArg>,
    },
    ToolSpec {
        name: "host_unsuspend",
        description: "Lift a host's suspension; it becomes stopped (start it with host_start).",
        ability: Ability::HostWrite,
        hint: Hint::Additive,
        schema: schema::<HostArg>,
    },
    ToolSpec {
        name: "host_logs",
        description: "The last lines a host's container printed.",
        ability: Ability::HostRead,
        hint: Hint::ReadOnly,
        schema: schema::<LogArgs>,
    },
    ToolSpec {
        name: "host_egress_check",
        description: "Check a running host's egress from inside it, through its real path: connectivity, exit IP against the egress's declared address, DNS leak.",
        ability: Ability::EgressTest,
        hint: Hint::Additive,
        schema: schema::<HostArg>,
    },
    ToolSpec {
        name: "binding_create",
        description: "Bind a host to an egress (one per host); a running host moves onto it by a task.",
        ability: Ability::HostWrite,
        hint: Hint::Additive,
        schema: schema::<ops::bindings::CreateBinding>,
    },
    ToolSpec {
        name: "binding_delete",
        description: "Remove a binding by its id: the host loses all outside traffic.",
        ability: Ability::HostWrite,
        hint: Hint::Destructive,
        schema: schema::<IdArg>,
    },
    ToolSpec {
        name: "users_list",
        description: "List user accounts.",
        ability: Ability::UserRead,
        hint: Hint::ReadOnly,
        schema: schema::<PageArgs>,
    },
    ToolSpec {
        name: "user_create",
        description: "Create a user account; a generated password is answered once.",
        ability: Ability::UserWrite,
        hint: Hint::Additive,
        schema: schema::<ops::users::CreateUser>,
    },
    ToolSpec {
        name: "user_get",
        description: "Show one user account, by id or user name.",
        ability: Ability::UserRead,
        hint: Hint::ReadOnly,
        schema: schema::<UserArg>,
    },
    ToolSpec {
        name: "user_set_expiry",
        description: "Set or clear an account's expiry; past it, its logins stop and its hosts are stopped.",
        ability: Ability::UserWrite,
        hint: Hint::Additive,
        schema: schema::<ExpiryArgs>,
    },
    ToolSpec {
        name: "user_delete",
        description: "Delete a user account; its hosts (containers and homes) are deleted by tasks, answered to poll.",
        ability: Ability::UserWrite,
        hint: Hint::Destructive,
        schema: schema::<UserArg>,
    },
    ToolSpec {
        name: "user_disable",
        description: "Disable a user account by id: their logins stop and their sessions end.",
        ability: Ability::UserWrite,
        hint: Hint::Destructive,
        schema: schema::<IdArg>,
    },
    ToolSpec {
        name: "user_enable",
        description: "Enable a disabled user account by id.",
        ability: Ability::UserWrite,
        hint: Hint::Additive,
        schema: schema::<IdArg>,
    },
    ToolSpec {
        name: "egress_list",
        description: "List egresses (secrets masked) with their last test.",
        ability: Ability::EgressRead,
        hint: Hint::ReadOnly,
        schema: schema::<PageArgs>,
    },
    ToolSpec {
        name: "egress_get",
        description: "Show one egress (secrets masked) with its last test.",
        ability: Ability::EgressRead,
        hint: Hint::ReadOnly,
        schema: schema::<EgressArg>,
    },
    ToolSpec {
        name: "egress_test",
        description: "Test an egress by id: connectivity, exit IP and DNS leak, through its own data plane.",
        ability: Ability::EgressTest,
        hint: Hint::Additive,
        schema: schema::<EgressArg>,
    },
    ToolSpec {
        name: "sessions_list",
        description: "List live SSH sessions.",
        ability: Ability::HostRead,
        hint: Hint::ReadOnly,
        schema: schema::<NoArgs>,
    },
    ToolSpec {
        name: "session_end",
        description: "End a live SSH session by id; the user is told why.",
        ability: Ability::HostWrite,
        hint: Hint::Destructive,
        schema: schema::<IdArg>,
    },
    ToolSpec {
        name: "tasks_list",
        description: "List tasks (long operations), newest first, by status and host.",
        ability: Ability::TaskRead,
        hint: Hint::ReadOnly,
        schema: schema::<TaskListArgs>,
    },
    ToolSpec {
        name: "recordings_list",
        description: "List recorded terminal sessions, newest first, optionally of one host.",
        ability: Ability::SessionRead,
        hint: Hint::ReadOnly,
        schema: schema::<RecordingListArgs>,
    },
    ToolSpec {
        name: "task_get",
        description: "Read a task by id: poll it until status is succeeded or failed.",
        ability: Ability::TaskRead,
        hint: Hint::ReadOnly,
        schema: schema::<IdArg>,
    },
    ToolSpec {
        name: "events_list",
        description: "List audit events, newest first, with filters.",
        ability: Ability::EventRead,
        hint: Hint::ReadOnly,
        schema: schema::<EventArgs>,
    },
];

impl ToolSpec {
    fn tool(&self) -> Tool {
        let annotations = match self.hint {
            Hint::ReadOnly => ToolAnnotations::new().read_only(true),
            Hint::Additive => ToolAnnotations::new().read_only(false).destructive(false),
            Hint::Destructive => ToolAnnotations::new().read_only(false).destructive(true),
        };
        Tool::new(self.name, self.description, (self.schema)()).with_annotations(annotations)
    }
}

/// The tool named `name`.
pub fn find(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|t| t.name == name)
}

/// The tools a caller may call.
pub fn visible_to(caller: &Caller) -> Vec<Tool> {
    TOOLS
        .iter()
        .filter(|t| caller.principal.can(t.ability))
        .map(ToolSpec::tool)
        .collect()
}

fn args<T: DeserializeOwned>(raw: JsonObject) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(raw)).map_err(|e| ToolError::Arguments(e.to_string()))
}

fn uuid(raw: &str, what: &'static str) -> Result<Uuid, ToolError> {
    Ok(ops::parse_id(raw, what)?)
}

fn page(page: Option<u32>, per_page: Option<u32>) -> PageRequest {
    PageRequest {
        page: page.unwrap_or(1).max(1),
        per_page: per_page.unwrap_or(20).clamp(1, 100),
    }
}

fn to_json<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Calls a tool the caller may call.
pub async fn call(
    state: &AppState,
    caller: &Caller,
    spec: &ToolSpec,
    raw: JsonObject,
) -> Result<Value, ToolError> {
    let core: &ops::Core = state;
    let public = core.public();
    let host_view = |row| to_json(ops::hosts::Host::view(core, row, &public));
    let step = |kind: Kind, payload: Value, host: String| async move {
        let row = ops::hosts::lookup(core, caller, &host).await?;
        let queued = ops::hosts::step(core, caller, row.id, kind, payload).await?;
        Ok::<_, ToolError>(to_json(queued))
    };
    Ok(match spec.name {
        "dashboard_stats" => {
            args::<NoArgs>(raw)?;
            to_json(ops::overview::stats(core, caller).await?)
        }
        "server_status" => {
            args::<NoArgs>(raw)?;
            to_json(ops::overview::status(core, caller).await?)
        }
        "hosts_list" => {
            let a: HostListArgs = args(raw)?;
            let filter = ops::hosts::HostFilter {
                user_id: a.user_id.as_deref().map(|u| uuid(u, "user")).transpose()?,
                status: a.status,
            };
            let (rows, total) =
                ops::hosts::list(core, caller, filter, page(a.page, a.per_page)).await?;
            let hosts: Vec<Value> = rows.into_iter().map(host_view).collect();
            json!({"hosts": hosts, "total": total})
        }
        "host_get" => {
            let a: HostArg = args(raw)?;
            host_view(ops::hosts::lookup(core, caller, &a.host).await?)
        }
        "host_create" => {
            let made = ops::hosts::create(core, caller, args(raw)?).await?;
            let mut v = host_view(made.host);
            v["task_id"] = json!(made.task_id);
            v["ssh_password"] = json!(made.ssh_password);
            v
        }
        "host_start" => step(Kind::Start, json!({}), args::<HostArg>(raw)?.host).await?,
        "host_stop" => step(Kind::Stop, json!({}), args::<HostArg>(raw)?.host).await?,
        "host_delete" => step(Kind::Delete, json!({}), args::<HostArg>(raw)?.host).await?,
        "host_rebuild" => {
            let a: RebuildArgs = args(raw)?;
            let mut payload = json!({"wipe_home": a.wipe_home.unwrap_or(false)});
            if let Some(desktop) = a.desktop {
                payload["desktop"] = json!(desktop);
            }
            step(Kind::Rebuild, payload, a.host).await?
        }
        "host_suspend" => step(Kind::Suspend, json!({}), args::<HostArg>(raw)?.host).await?,
        "host_unsuspend" => {
            let row = ops::hosts::lookup(core, caller, &args::<HostArg>(raw)?.host).await?;
            host_view(ops::hosts::unsuspend(core, caller, row.id).await?)
        }
        "host_logs" => {
            let a: LogArgs = args(raw)?;
            let row = ops::hosts::lookup(core, caller, &a.host).await?;
            to_json(ops::hosts::logs(core, caller, row.id, a.tail.unwrap_or(100)).await?)
        }
        "host_egress_check" => {
            let row = ops::hosts::lookup(core, caller, &args::<HostArg>(raw)?.host).await?;
            to_json(ops::egress::check_host(core, caller, row.id).await?)
        }
        "binding_create" => to_json(ops::bindings::bind(core, caller, args(raw)?).await?),
        "binding_delete" => {
            let id = uuid(&args::<IdArg>(raw)?.id, "binding")?;
            match ops::bindings::unbind(core, caller, id).await? {
                Some(queued) => to_json(queued),
                None => json!({"deleted": id}),
            }
        }
        "users_list" => {
            let a: PageArgs = args(raw)?;
            let (users, total) = ops::users::list(core, caller, page(a.page, a.per_page)).await?;
            json!({"users": users, "total": total})
        }
        "user_create" => to_json(ops::users::create(core, caller, args(raw)?).await?),
        "user_get" => to_json(ops::users::lookup(core, caller, &args::<UserArg>(raw)?.user).await?),
        "user_set_expiry" => {
            let a: ExpiryArgs = args(raw)?;
            let id = ops::users::lookup(core, caller, &a.user).await?.id;
            let req = ops::users::SetExpiry {
                expires_at: a.expires_at,
            };
            to_json(ops::users::set_expiry(core, caller, id, req).await?)
        }
        "user_delete" => {
            let id = ops::users::lookup(core, caller, &args::<UserArg>(raw)?.user)
                .await?
                .id;
            json!({"deleted": id, "task_ids": ops::users::delete(core, caller, id).await?})
        }
        "user_disable" | "user_enable" => {
            let id = uuid(&args::<IdArg>(raw)?.id, "user")?;
            let status = if spec.name == "user_disable" {
                "disabled"
            } else {
                "active"
            };
            let req = ops::users::UpdateUser {
                status: Some(status.into()),
            };
            to_json(ops::users::set_status(core, caller, id, req).await?)
        }
        "egress_list" => {
            let a: PageArgs = args(raw)?;
            let (egress, total) = ops::egress::list(core, caller, page(a.page, a.per_page)).await?;
            json!({"egress": egress, "total": total})
        }
        "egress_get" => {
            let id = ops::egress::lookup(core, caller, &args::<EgressArg>(raw)?.id).await?;
            to_json(ops::egress::get(core, caller, id).await?)
        }
        "egress_test" => {
            let id = ops::egress::lookup(core, caller, &args::<EgressArg>(raw)?.id).await?;
            to_json(ops::egress::test(core, caller, id).await?)
        }
        "sessions_list" => {
            args::<NoArgs>(raw)?;
            json!({"sessions": ops::sessions::list(core, caller)?})
        }
        "session_end" => {
            let id = uuid(&args::<IdArg>(raw)?.id, "session")?;
            json!({"ended": ops::sessions::end(core, caller, id).await?})
        }
        "tasks_list" => {
            let a: TaskListArgs = args(raw)?;
            let host_id = match a.host {
                Some(h) => Some(ops::hosts::lookup(core, caller, &h).await?.id),
                None => None,
            };
            let filter = crate::store::tasks::TaskFilter {
                status: a.status,
                host_id,
                ..Default::default()
            };
            let (tasks, total) =
                ops::tasks::list(core, caller, &filter, page(a.page, a.per_page)).await?;
            json!({"tasks": tasks, "total": total})
        }
        "recordings_list" => {
            let a: RecordingListArgs = args(raw)?;
            let host_id = match a.host {
                Some(h) => Some(ops::hosts::lookup(core, caller, &h).await?.id),
                None => None,
            };
            let (recordings, total) =
                ops::recordings::list(core, caller, host_id, page(a.page, a.per_page)).await?;
            json!({"recordings": recordings, "total": total})
        }
        "task_get" => {
            let id = uuid(&args::<IdArg>(raw)?.id, "task")?;
            to_json(ops::tasks::get(core, caller, id).await?)
        }
        "events_list" => {
            let a: EventArgs = args(raw)?;
            let filter = EventFilter {
                user_id: a.user_id.as_deref().map(|u| uuid(u, "user")).transpose()?,
                host_id: a.host_id.as_deref().map(|h| uuid(h, "host")).transpose()?,
                action: a.action,
                ..Default::default()
            };
            let (events, total) =
                ops::events::list(core, caller, &filter, page(Some(1), a.limit)).await?;
            json!({"events": events, "total": total})
        }
        other => return Err(ToolError::Refused(format!("no tool named {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::ops::Face;

    fn token(abilities: &[Ability]) -> Caller {
        Caller::new(
            Principal::Token {
                id: Uuid::nil(),
                name: "t".into(),
                abilities: abilities.to_vec(),
            },
            None,
            Face::Mcp,
        )
    }

    #[test]
    fn every_tool_has_an_object_schema_a_description_and_a_unique_name() {
        let mut names = std::collections::HashSet::new();
        for t in TOOLS {
            assert!(names.insert(t.name), "{} twice", t.name);
            assert!(!t.description.is_empty());
            let s = (t.schema)();
            assert_eq!(s.get("type"), Some(&json!("object")), "{}", t.name);
        }
    }

    #[test]
    fn a_token_sees_only_the_tools_its_abilities_allow() {
        let read = token(&[Ability::McpAccess, Ability::HostRead]);
        let names: Vec<_> = visible_to(&read).into_iter().map(|t| t.name).collect();
        assert!(names.iter().any(|n| n == "hosts_list"));
        assert!(
            !names
                .iter()
                .any(|n| n == "host_create" || n == "host_delete")
        );
        let all: Vec<_> = visible_to(&token(&[Ability::All])).into_iter().collect();
        assert_eq!(all.len(), TOOLS.len());
    }

    #[test]
    fn destructive_tools_say_so() {
        for name in [
            "host_delete",
            "host_stop",
            "binding_delete",
            "session_end",
            "user_disable",
            "user_delete",
            "host_suspend",
        ] {
            let t = find(name).unwrap().tool();
            assert_eq!(
                t.annotations.and_then(|a| a.destructive_hint),
                Some(true),
                "{name}"
            );
        }
        let t = find("hosts_list").unwrap().tool();
        assert_eq!(t.annotations.and_then(|a| a.read_only_hint), Some(true));
    }
}
