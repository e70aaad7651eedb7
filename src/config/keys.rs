//! How a message names a setting: its key path (`bots.main.token`), the environment
//! variable that sets it (`TGRELAY_BOTS__MAIN__TOKEN`), and where a bad value came from.
//!
//! figment's own error text is not shown. It reverses the key path of an error found
//! under `extract_inner` (`KIDN.SINK`), spells environment keys as dotted capitals and
//! puts the profile in front of file keys (`default.drain_timeout`). Each error is told
//! again here from its parts, naming the variable exactly as the user wrote it.

use figment::error::{Actual, Kind};
use figment::Metadata;

/// The prefix of every setting in the environment.
pub const ENV_PREFIX: &str = "TGRELAY_";

/// The environment variable for a key path: `bots.main.token` → `TGRELAY_BOTS__MAIN__TOKEN`.
pub fn env_var(path: &str) -> String {
    format!("{ENV_PREFIX}{}", path.replace('.', "__").to_uppercase())
}

/// A key path with its variable, the way every message names a setting:
/// `bots.main.token (TGRELAY_BOTS__MAIN__TOKEN)`.
pub fn setting(path: &str) -> String {
    format!("{path} ({})", env_var(path))
}

/// The variable of this process's environment that sets `path`, spelt as written
/// (figment matches the prefix in any case and lowercases the rest).
fn written_env_var(path: &str) -> Option<String> {
    std::env::vars_os().find_map(|(name, _)| {
        let name = name.to_str()?.trim();
        let head = name.get(..ENV_PREFIX.len())?;
        let rest = name.get(ENV_PREFIX.len()..)?;
        let same = head.eq_ignore_ascii_case(ENV_PREFIX)
            && rest.replace("__", ".").eq_ignore_ascii_case(path);
        same.then(|| name.to_owned())
    })
}

/// Every error in `error`, found while extracting the key path `prefix`, one message each.
pub fn describe(error: figment::Error, prefix: &str) -> Vec<String> {
    let prefix: Vec<&str> = prefix.split('.').filter(|s| !s.is_empty()).collect();
    error
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            // `extract_inner` appends its own path to the first error's path (the
            // serde path to the value comes first); the others have none of it.
            let mut inner: &[String] = &e.path;
            if i == 0 && inner.ends_with(&prefix.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            {
                inner = &inner[..inner.len() - prefix.len()];
            }
            let path: Vec<&str> = prefix
                .iter()
                .copied()
                .chain(inner.iter().map(String::as_str))
                .collect();
            let path = path.join(".");
            let problem = problem(&e, &path);
            retell(&path, e.metadata.as_ref(), &problem)
        })
        .collect()
}

/// A message for a problem with the value at `path`, naming where that value came from.
pub fn retell(path: &str, metadata: Option<&Metadata>, problem: &str) -> String {
    if let Some(var) = written_env_var(path) {
        return format!("{var} ({path}): {problem}");
    }
    match metadata {
        Some(md) if md.name.contains("environment") => {
            format!("{} ({path}): {problem}", env_var(path))
        }
        Some(md) => match md.source.as_ref().and_then(|s| s.file_path()) {
            Some(file) => format!("{path} in {}: {problem}", file.display()),
            None => format!("{path}: {problem}"),
        },
        None => format!("{path}: {problem}"),
    }
}

/// What is wrong, in words a person acts on.
fn problem(e: &figment::Error, path: &str) -> String {
    if let Some(number) = bare_duration(e) {
        let from_env = written_env_var(path).is_some();
        let written = if from_env {
            format!("{number}s")
        } else {
            format!("\"{number}s\"")
        };
        return format!(
            "{number} has no unit: write {written} (a duration: 500ms, 20s, 2m, 1h...)"
        );
    }
    match &e.kind {
        Kind::UnknownField(_, []) => "unknown setting".to_owned(),
        Kind::UnknownField(_, expected) => {
            format!("unknown setting; expected one of {}", expected.join(", "))
        }
        kind => kind.to_string(),
    }
}

/// The number of a duration written without a unit (`20`, or `"20"`), if that is the error.
fn bare_duration(e: &figment::Error) -> Option<String> {
    let (actual, expected) = match &e.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            (actual, expected)
        }
        _ => return None,
    };
    if expected != "a duration" {
        return None;
    }
    match actual {
        Actual::Unsigned(n) => Some(n.to_string()),
        Actual::Signed(n) if *n >= 0 => Some(n.to_string()),
        Actual::Str(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Some(text.clone())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_path_becomes_its_variable() {
        assert_eq!(env_var("drain_timeout"), "TGRELAY_DRAIN_TIMEOUT");
        assert_eq!(
            setting("bots.main.webhook.url"),
            "bots.main.webhook.url (TGRELAY_BOTS__MAIN__WEBHOOK__URL)"
        );
    }
}
