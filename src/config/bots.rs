//! How the bots are read: each `[bots.<name>]` table laid over `[bot_defaults]`, and one
//! bot per token file in `tokens_dir`.
//!
//! The merged value tree is built once and each bot is read from it, so a configuration
//! of N bots loads in time linear in N (extracting every bot from the figment would
//! merge and clone the whole tree once per bot). Only a bot that fails to read is
//! extracted again through the figment, for the message that names where its bad value
//! came from.

use std::collections::BTreeMap;
use std::path::Path;

use figment::value::{Dict, Value};
use figment::Figment;
use serde::Deserialize;

use super::keys;
use super::BotConfig;

/// `{bot}` in a default's text is replaced by each bot's name.
pub const BOT_PLACEHOLDER: &str = "{bot}";

/// The bots of a configuration, and whether it names any (even ones that failed to read).
pub(super) struct Bots {
    pub defaults: BotConfig,
    pub bots: BTreeMap<String, BotConfig>,
    pub named: bool,
}

/// Reads `[bot_defaults]`, `[bots.*]` and the token files of `tokens_dir`.
pub(super) fn read(
    figment: &Figment,
    top: &BTreeMap<String, Value>,
    tokens_dir: Option<&Path>,
    errors: &mut Vec<String>,
) -> Bots {
    let empty = Dict::new();
    let defaults = match top.get("bot_defaults") {
        Some(Value::Dict(_, dict)) => dict,
        Some(other) => {
            let md = figment.get_metadata(other.tag());
            errors.push(keys::retell(
                "bot_defaults",
                md,
                "must be a table of bot settings",
            ));
            &empty
        }
        None => &empty,
    };
    let defaults_config = read_defaults(figment, defaults, errors);
    let tables = match top.get("bots") {
        Some(Value::Dict(_, bots)) => bots,
        Some(other) => {
            let md = figment.get_metadata(other.tag());
            errors.push(keys::retell("bots", md, "must be a table of bots by name"));
            &empty
        }
        None => &empty,
    };
    let files = match tokens_dir {
        Some(dir) => token_files(dir, errors),
        None => BTreeMap::new(),
    };
    let mut bots = BTreeMap::new();
    for (name, table) in tables {
        let key = format!("bots.{name}");
        let table = match table {
            Value::Dict(_, dict) => dict,
            other => {
                let md = figment.get_metadata(other.tag());
                errors.push(keys::retell(&key, md, "must be a table of bot settings"));
                continue;
            }
        };
        let value = Value::from(overlay(defaults, table, name));
        match BotConfig::deserialize(&value) {
            Ok(mut bot) => {
                if let Some(file) = files.get(name) {
                    if bot.token.is_some() || bot.token_file.is_some() {
                        errors.push(format!(
                            "{key}: its token is set both here and by the file {} in tokens_dir; keep one",
                            file.display()
                        ));
                    }
                    bot.token_file = Some(file.clone());
                }
                bots.insert(name.clone(), bot);
            }
            Err(e) => match figment.extract_inner::<BotConfig>(&key) {
                Err(e) => errors.extend(keys::describe(e, &key)),
                // The bot's own table reads: the bad value is a default, told once below.
                Ok(_) if defaults_config.is_none() => {}
                Ok(_) => errors.extend(keys::describe(e, &key)),
            },
        }
    }
    let defaults_config = defaults_config.unwrap_or_default();
    for (name, file) in &files {
        if !bots.contains_key(name) {
            let mut bot = with_name(&defaults_config, defaults, name);
            bot.token_file = Some(file.clone());
            bots.insert(name.clone(), bot);
        }
    }
    Bots {
        defaults: defaults_config,
        bots,
        named: !tables.is_empty() || !files.is_empty(),
    }
}

/// The defaults as a bot's settings, or `None` (and the problems) when they do not read.
fn read_defaults(
    figment: &Figment,
    defaults: &Dict,
    errors: &mut Vec<String>,
) -> Option<BotConfig> {
    if defaults.is_empty() {
        return Some(BotConfig::default());
    }
    match figment.extract_inner::<BotConfig>("bot_defaults") {
        Ok(bot) => {
            if bot.token.is_some() || bot.token_file.is_some() {
                errors.push(
                    "bot_defaults: a token belongs to one bot; set it in [bots.<name>] or as a file in tokens_dir"
                        .into(),
                );
            }
            Some(bot)
        }
        Err(e) => {
            errors.extend(keys::describe(e, "bot_defaults"));
            None
        }
    }
}

/// The defaults for a bot named `name`: read once for all bots unless a default
/// mentions the name.
fn with_name(defaults_config: &BotConfig, defaults: &Dict, name: &str) -> BotConfig {
    if !mentions_name(defaults) {
        return defaults_config.clone();
    }
    let value = Value::from(overlay(defaults, &Dict::new(), name));
    BotConfig::deserialize(&value).unwrap_or_else(|_| defaults_config.clone())
}

fn mentions_name(dict: &Dict) -> bool {
    dict.values().any(|v| match v {
        Value::String(_, s) => s.contains(BOT_PLACEHOLDER),
        Value::Dict(_, d) => mentions_name(d),
        _ => false,
    })
}

/// `table` laid over `defaults`, nested tables merged key by key; `{bot}` in the
/// defaults' text becomes `name`.
fn overlay(defaults: &Dict, table: &Dict, name: &str) -> Dict {
    let mut merged: Dict = defaults
        .iter()
        .map(|(k, v)| (k.clone(), named(v, name)))
        .collect();
    for (key, value) in table {
        let value = match (merged.remove(key), value) {
            (Some(Value::Dict(tag, base)), Value::Dict(_, over)) => {
                Value::Dict(tag, overlay(&base, over, name))
            }
            _ => value.clone(),
        };
        merged.insert(key.clone(), value);
    }
    merged
}

fn named(value: &Value, name: &str) -> Value {
    match value {
        Value::String(tag, s) if s.contains(BOT_PLACEHOLDER) => {
            Value::String(*tag, s.replace(BOT_PLACEHOLDER, name))
        }
        Value::Dict(tag, d) => Value::Dict(
            *tag,
            d.iter().map(|(k, v)| (k.clone(), named(v, name))).collect(),
        ),
        other => other.clone(),
    }
}

/// The token files of a directory by bot name. Hidden entries are skipped: a mounted
/// Kubernetes Secret keeps its data under `..data` and `..<timestamp>`, and editors
/// write `.name.swp`; so are directories.
fn token_files(dir: &Path, errors: &mut Vec<String>) -> BTreeMap<String, std::path::PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(format!(
                "{}: cannot read the directory {}: {e}",
                keys::setting("tokens_dir"),
                dir.display()
            ));
            return BTreeMap::new();
        }
    };
    let mut files = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            errors.push(format!(
                "tokens_dir {}: a file name that is not UTF-8 cannot name a bot",
                dir.display()
            ));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Following links: a Secret's keys are links into `..data`.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.insert(name.to_owned(), path);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::value::Tag;

    fn dict(pairs: &[(&str, Value)]) -> Dict {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn text(s: &str) -> Value {
        Value::String(Tag::Default, s.into())
    }

    #[test]
    fn a_bot_table_overrides_defaults_key_by_key_and_names_itself() {
        let defaults = dict(&[
            ("mode", text("webhook")),
            (
                "webhook",
                Value::from(dict(&[
                    ("url", text("https://hooks.example/{bot}")),
                    ("register", Value::from(true)),
                ])),
            ),
        ]);
        let table = dict(&[(
            "webhook",
            Value::from(dict(&[("register", Value::from(false))])),
        )]);
        let merged = Value::from(overlay(&defaults, &table, "shop"));
        let bot = BotConfig::deserialize(&merged).unwrap();
        assert_eq!(bot.mode, super::super::Mode::Webhook);
        assert_eq!(
            bot.webhook.url.as_deref(),
            Some("https://hooks.example/shop")
        );
        assert!(!bot.webhook.register, "the bot's own value wins");
    }
}
