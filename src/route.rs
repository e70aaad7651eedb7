//! Routing templates: `telegram.{bot}.{kind}` and friends, parsed once, rendered per update.

use std::fmt::Write;

use crate::envelope::Envelope;

/// A subject or topic template with `{bot}`, `{bot_id}` and `{kind}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Bot,
    BotId,
    Kind,
}

impl RouteTemplate {
    pub fn parse(template: &str) -> Result<RouteTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{template:?}: unclosed '{{'"))?;
            parts.push(match &rest[open + 1..open + close] {
                "bot" => Part::Bot,
                "bot_id" => Part::BotId,
                "kind" => Part::Kind,
                other => {
                    return Err(format!(
                        "{template:?}: unknown placeholder {{{other}}} (use {{bot}}, {{bot_id}} or {{kind}})"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let stray_brace = parts
            .iter()
            .any(|p| matches!(p, Part::Text(t) if t.contains('}')));
        if template.is_empty()
            || stray_brace
            || template.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        {
            return Err(format!("{template:?}: not a usable subject or topic"));
        }
        Ok(RouteTemplate { parts })
    }

    /// The route of an update.
    pub fn render(&self, envelope: &Envelope) -> String {
        self.render_with(&envelope.bot.name, envelope.bot.id, envelope.kind.as_str())
    }

    pub fn render_with(&self, bot: &str, bot_id: u64, kind: &str) -> String {
        let mut out = String::with_capacity(48);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Bot => out.push_str(bot),
                Part::BotId => write!(out, "{bot_id}").expect("writing to a String"),
                Part::Kind => out.push_str(kind),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let t = RouteTemplate::parse("telegram.{bot}.{kind}").unwrap();
        assert_eq!(t.render_with("main", 1, "message"), "telegram.main.message");
        let t = RouteTemplate::parse("tg-{bot_id}").unwrap();
        assert_eq!(t.render_with("main", 42, "poll"), "tg-42");
    }

    #[test]
    fn refuses_unknown_placeholders_and_empty_templates() {
        assert!(RouteTemplate::parse("telegram.{chat}").is_err());
        assert!(RouteTemplate::parse("telegram.{bot").is_err());
        assert!(RouteTemplate::parse("").is_err());
        assert!(RouteTemplate::parse("telegram.>").is_err());
        assert!(RouteTemplate::parse("a}b").is_err());
    }
}
