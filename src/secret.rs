//! `Secret`: a string that never prints itself (tokens, passwords, webhook secrets).
//!
//! Debug, Display and Serialize all write `**REDACTED**`, so a secret inside a config
//! struct, an error or a log field cannot leak by accident; `expose` is the one way in.
//! Every secret setting has a `*_file` twin ([`resolve_file`]), so a mounted Kubernetes
//! Secret never has to pass through an environment variable.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const REDACTED: &str = "**REDACTED**";

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces every occurrence of the secret in `text` (for third-party error messages).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, REDACTED)
        }
    }
}

/// Fills `secret` from `file` when the file is set. The problem, if any, says what is
/// wrong without the value: unreadable, empty, or set both inline and from a file.
pub fn resolve_file(secret: &mut Option<Secret>, file: Option<&Path>) -> Result<(), String> {
    let Some(path) = file else { return Ok(()) };
    if secret.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err("set inline and from a file: keep one".into());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // The line break `echo` and editors end a file with is not part of the secret.
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    *secret = Some(Secret::new(value));
    Ok(())
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("123:abc");
        assert_eq!(format!("{s} {s:?}"), "**REDACTED** **REDACTED**");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"**REDACTED**\"");
        assert_eq!(
            s.scrub("GET /bot123:abc/getMe"),
            "GET /bot**REDACTED**/getMe"
        );
        assert_eq!(s.expose(), "123:abc");
    }

    #[test]
    fn a_file_gives_its_content_but_a_final_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        let read = |content: &str| {
            std::fs::write(&path, content).unwrap();
            let mut secret = None;
            resolve_file(&mut secret, Some(&path)).map(|()| secret.unwrap().expose().to_owned())
        };
        assert_eq!(read("hunter2\n").unwrap(), "hunter2");
        assert_eq!(read("hunter2\r\n").unwrap(), "hunter2");
        assert_eq!(read(" two words \n\n").unwrap(), " two words \n");
        assert!(read("\n").unwrap_err().ends_with("is empty"));

        let mut unset = None;
        let missing = dir.path().join("missing");
        let err = resolve_file(&mut unset, Some(&missing)).unwrap_err();
        assert!(err.starts_with("cannot read"), "{err}");
        let mut both = Some(Secret::new("inline"));
        assert!(resolve_file(&mut both, Some(&path)).is_err());
        assert_eq!(both.unwrap().expose(), "inline");
        let mut inline = Some(Secret::new("inline"));
        assert!(resolve_file(&mut inline, None).is_ok());
    }
}
