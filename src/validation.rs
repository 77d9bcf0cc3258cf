//! Field-level validation errors, collected so that one 422 names every bad field.

use std::collections::BTreeMap;

/// Messages per field name (dotted for nested fields, such as `proxy_config.server_port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a message for a field.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    /// A single-field error.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new();
        e.add(field, message);
        e
    }

    /// Records the error of a check, if any.
    pub fn check(&mut self, field: &str, result: Result<(), String>) {
        if let Err(m) = result {
            self.add(field, m);
        }
    }

    /// One sentence for the whole: the first field's messages, and how many more fields.
    pub fn summary(&self) -> String {
        let first = self
            .0
            .iter()
            .next()
            .map(|(field, msgs)| format!("{field}: {}", msgs.join("; ")))
            .unwrap_or_else(|| "the input is invalid".into());
        match self.0.len() {
            0 | 1 => first,
            n => format!("{first} (and {} more)", n - 1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when no error was recorded.
    pub fn into_result<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// Checks a name shown to operators (a key's, a token's, an egress's label): trimmed, at most
/// `max` characters, one line without control characters (a newline in a key's comment would
/// break the key line; one in a listing would forge a row). `required` refuses an empty name.
pub fn display_name(value: &str, max: usize, required: bool) -> Result<String, String> {
    let v = value.trim();
    if required && v.is_empty() {
        return Err(format!("is required, 1 to {max} characters"));
    }
    if v.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err("must be one line without control characters".into());
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_one_trimmed_line_within_their_length() {
        assert_eq!(display_name("  laptop ", 100, true).unwrap(), "laptop");
        assert!(display_name("  ", 100, true).is_err());
        assert_eq!(display_name("", 100, false).unwrap(), "");
        assert!(display_name("a\nb", 100, true).is_err());
        assert!(display_name("a\u{8}b", 100, true).is_err());
        assert!(display_name(&"é".repeat(101), 100, true).is_err());
        assert_eq!(
            display_name(&"é".repeat(100), 100, true)
                .unwrap()
                .chars()
                .count(),
            100
        );
    }
}
