//! Abilities of API tokens, `resource:action`, and which ones a caller holds.

use std::fmt;

/// One ability. `*` ([`Ability::All`]) grants every ability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ability {
    UserRead,
    UserWrite,
    HostRead,
    HostWrite,
    EgressRead,
    EgressWrite,
    EgressTest,
    TaskRead,
    EventRead,
    TokenWrite,
    /// Use the MCP endpoint at all (each tool still needs its own ability).
    McpAccess,
    /// Read `/metrics`.
    MetricsRead,
    /// List and download session recordings.
    SessionRead,
    All,
}

impl Ability {
    pub const ALL: [Ability; 14] = [
        Ability::UserRead,
        Ability::UserWrite,
        Ability::HostRead,
        Ability::HostWrite,
        Ability::EgressRead,
        Ability::EgressWrite,
        Ability::EgressTest,
        Ability::TaskRead,
        Ability::EventRead,
        Ability::TokenWrite,
        Ability::McpAccess,
        Ability::MetricsRead,
        Ability::SessionRead,
        Ability::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ability::UserRead => "user:read",
            Ability::UserWrite => "user:write",
            Ability::HostRead => "host:read",
            Ability::HostWrite => "host:write",
            Ability::EgressRead => "egress:read",
            Ability::EgressWrite => "egress:write",
            Ability::EgressTest => "egress:test",
            Ability::TaskRead => "task:read",
            Ability::EventRead => "event:read",
            Ability::TokenWrite => "token:write",
            Ability::McpAccess => "mcp:access",
            Ability::MetricsRead => "metrics:read",
            Ability::SessionRead => "session:read",
            Ability::All => "*",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether a set of abilities grants `self`.
    pub fn granted_by(self, held: &[Ability]) -> bool {
        held.contains(&Ability::All) || held.contains(&self)
    }
}

impl fmt::Display for Ability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_grants_everything_and_names_round_trip() {
        for a in Ability::ALL {
            assert_eq!(Ability::parse(a.as_str()), Some(a));
            assert!(a.granted_by(&[Ability::All]));
        }
        assert!(Ability::HostRead.granted_by(&[Ability::HostRead]));
        assert!(!Ability::HostWrite.granted_by(&[Ability::HostRead]));
        assert_eq!(Ability::parse("host:delete"), None);
    }
}
