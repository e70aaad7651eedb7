//! Realistic Telegram updates, generated from the Bot API's type data
//! (tests/data/bot-api-types.json, plus the kinds later releases added, in
//! tests/data/bot-api-later.json), and the routing facts the wire contract
//! assigns to them.
//!
//! The JSON is written as text, not through `serde_json::Value`, so the bytes
//! carry what a re-serializer would change: field order as in the type data,
//! raw non-ASCII UTF-8, `\u00e9`/`\ud83d\ude00`/`\/` escapes, and floats such as
//! `1e-7` or `2.50E+2`. A relay that re-encodes an update is caught by comparing
//! bytes. Generation is deterministic for a (kind, update_id, seed): it uses its
//! own SplitMix64 so the bytes do not change with a `rand` upgrade.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

const TYPES_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bot-api-types.json");
const LATER_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bot-api-later.json");

/// Past this depth an object is written as `{}`; only a required-field cycle
/// could get here, and the type data has none outside unions.
const MAX_DEPTH: usize = 10;
/// Optional fields written per object, in thousandths, by the object's depth:
/// detail thins out with depth so an average update stays near 1 KB.
const EXPECTED_OPTIONAL: [u64; 5] = [0, 10000, 6000, 3000, 1000];
/// No optional object (or array of objects) is started deeper than this.
const MAX_OPTIONAL_OBJECT_DEPTH: usize = 3;
const USERS: usize = 50;

/// What a message carries, with weights: one of these per message (and per
/// external reply or poll media, which hold one content the same way).
const CONTENT: [(&str, u64); 26] = [
    ("text", 50),
    ("photo", 12),
    ("sticker", 8),
    ("location", 5),
    ("document", 5),
    ("voice", 4),
    ("video", 4),
    ("animation", 3),
    ("audio", 2),
    ("video_note", 2),
    ("venue", 2),
    ("dice", 2),
    ("poll", 3),
    ("contact", 2),
    ("new_chat_members", 2),
    ("left_chat_member", 1),
    ("pinned_message", 1),
    ("new_chat_title", 1),
    ("live_photo", 1),
    ("paid_media", 1),
    ("story", 1),
    ("game", 1),
    ("invoice", 1),
    ("checklist", 1),
    ("giveaway", 1),
    ("giveaway_winners", 1),
];
/// Types holding one content from CONTENT.
const CONTENT_OWNERS: [&str; 3] = ["Message", "ExternalReplyInfo", "PollMedia"];

/// The optional fields a Message commonly carries besides its content, with their
/// chance in thousandths. Other optional fields of Message (service payloads and
/// flags) appear only as the chosen content, as in real traffic.
const MESSAGE_EXTRAS: [(&str, u64); 18] = [
    ("message_thread_id", 80),
    ("reply_to_message", 650),
    ("external_reply", 60),
    ("quote", 100),
    ("forward_origin", 200),
    ("via_bot", 40),
    ("is_topic_message", 50),
    ("is_automatic_forward", 20),
    ("has_protected_content", 30),
    ("is_from_offline", 20),
    ("media_group_id", 60),
    ("author_signature", 100),
    ("effect_id", 20),
    ("entities", 600),
    ("caption", 600),
    ("caption_entities", 300),
    ("link_preview_options", 150),
    ("reply_markup", 400),
];
/// Contents that can have a caption.
const MEDIA: [&str; 6] = ["photo", "video", "document", "audio", "animation", "voice"];
/// Types whose optional fields depend on a variant the type data cannot express:
/// only the listed ones are written, always.
const FIXED_OPTIONALS: [(&str, &[&str]); 3] = [
    ("MessageEntity", &[]),
    ("InlineKeyboardButton", &["callback_data"]),
    ("KeyboardButton", &[]),
];
const ENTITY_TYPES: [&str; 6] = [
    "bold",
    "italic",
    "mention",
    "hashtag",
    "bot_command",
    "code",
];

/// Every kind the wire contract routes by `<kind>.chat.id`.
const CHAT_KINDS: [&str; 16] = [
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "guest_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
    "stopped_message_generation",
];
/// Kinds of Bot API 10.3 with no chat; any other name is a future kind, routed by `chat.id`.
const CHATLESS_KINDS: [&str; 11] = [
    "business_connection",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "managed_bot",
    "subscription",
];

// String pools hold JSON string *contents*, already escaped, so escapes reach the bytes.
const TEXTS: [&str; 19] = [
    "Привет! Подскажите, пожалуйста, как настроить бота, чтобы он пересылал все сообщения из группы в канал? Я уже пробовал через настройки, но ничего не получилось 😕",
    r"Reminder: the release train leaves on Thursday. Please make sure your PRs are merged by Wednesday 18:00 UTC, and that the changelog entry is in docs\/CHANGELOG.md. Thanks! 🚂",
    "今日の会議は15時からです。資料は共有フォルダにアップロードしました。質問があれば、このスレッドに書いてください。よろしくお願いします！",
    "Привет 👋",
    "Hello there! How's it going?",
    r"caf\u00e9 au lait, s'il vous pla\u00eet ☕",
    r"docs: https:\/\/core.telegram.org\/bots\/api#getting-updates",
    r"smile \ud83d\ude00 and wave 👋",
    "Ça va? Très bien, merci. À demain!",
    r#"she said \"hi\"\nand left"#,
    "/start",
    "/help@fake_bot",
    "日本語のテキストです。よろしくお願いします。",
    "Straße, Ärger, Übermut — ß é à ü",
    "مرحبا بالعالم",
    "ok",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. 🚀🔥",
    r"tab\there, backslash \\ and slash \/",
    "Встреча в 18:00 у входа 🙂 Не опаздывайте!",
];
const FIRST_NAMES: [&str; 12] = [
    "Анна",
    "José",
    "Łukasz",
    "李雷",
    "Mia 🌸",
    "Ahmed",
    r"Zo\u00eb",
    "Иван",
    "Sam",
    "Ngozi",
    "Kenji",
    "Chloé",
];
const LAST_NAMES: [&str; 6] = [
    "Петрова",
    "García",
    "Nowak",
    "O'Brien",
    "M\\u00fcller",
    "Smith",
];
const TITLES: [&str; 7] = [
    "Rust Beginners 🦀",
    "Семейный чат",
    "Café des Arts",
    "Release notes",
    r"Trading desk \u00e9quipe",
    "日本語チャット",
    "Book club 📚",
];
const WORDS: [&str; 8] = [
    "alpha", "bravo", "relay", "orbit", "pixel", "maple", "quartz", "delta",
];
const EMOJI: [&str; 7] = ["👍", "❤", "🔥", "🎉", r"\ud83d\ude02", "👀", "🤔"];
const LANGS: [&str; 5] = ["en", "ru", "de", "pt-br", "ja"];
const CURRENCIES: [&str; 3] = ["XTR", "USD", "EUR"];
const MIMES: [&str; 4] = [
    r"image\/jpeg",
    r"video\/mp4",
    r"audio\/ogg",
    r"application\/pdf",
];
const ODD_FLOATS: [&str; 8] = [
    "1e-7", "2.50E+2", "0.5", "12.75", "3.0", "1.5e3", "-0.25", "65",
];
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Subtypes whose discriminator is not their name's tail in snake_case.
const TAG_OVERRIDES: [(&str, &str); 3] = [
    ("ChatMemberOwner", "creator"),
    ("ChatMemberBanned", "kicked"),
    ("PassportElementErrorDataField", "data"),
];

#[derive(Deserialize)]
struct TypesFile {
    version: String,
    types: HashMap<String, TypeDef>,
}

/// tests/data/bot-api-later.json: what each release after TYPES_FILE's added.
#[derive(Deserialize)]
struct LaterFile {
    releases: Vec<Release>,
}

#[derive(Deserialize)]
struct Release {
    version: String,
    update_fields: Vec<FieldDef>,
    types: HashMap<String, TypeDef>,
}

#[derive(Deserialize)]
struct TypeDef {
    #[serde(default)]
    fields: Vec<FieldDef>,
    #[serde(default)]
    subtypes: Vec<String>,
}

#[derive(Deserialize)]
struct FieldDef {
    name: String,
    types: Vec<String>,
    required: bool,
}

/// The Bot API's types, ready to generate updates from.
pub struct Corpus {
    types: HashMap<String, TypeDef>,
    /// Discriminator value (`type`, `status` or `source`) of each union member.
    tags: HashMap<String, String>,
    /// The release of TYPES_FILE, e.g. `Bot API 10.1`.
    base_version: String,
    /// `(release, kind)` of each Update field LATER_FILE adds, in order.
    later_kinds: Vec<(String, String)>,
}

impl Corpus {
    /// Reads tests/data/bot-api-types.json and adds tests/data/bot-api-later.json.
    pub fn load() -> Corpus {
        let mut file: TypesFile = read_json(TYPES_FILE);
        let later: LaterFile = read_json(LATER_FILE);
        let mut later_kinds = Vec::new();
        for release in later.releases {
            for (name, def) in release.types {
                let defined_twice = file.types.insert(name.clone(), def).is_some();
                assert!(
                    !defined_twice,
                    "{LATER_FILE}: {name} is in {TYPES_FILE} already"
                );
            }
            let update = file.types.get_mut("Update").expect("an Update type");
            for field in release.update_fields {
                later_kinds.push((release.version.clone(), field.name.clone()));
                update.fields.push(field);
            }
        }
        let tags = union_tags(&file.types);
        Corpus {
            types: file.types,
            tags,
            base_version: file.version,
            later_kinds,
        }
    }

    /// The Update fields other than update_id, in the Bot API's order (the later
    /// releases' additions last).
    pub fn kinds(&self) -> Vec<String> {
        self.update_fields().map(|f| f.name.clone()).collect()
    }

    /// The release whose api.json tests/data/bot-api-types.json was extracted from.
    pub fn base_version(&self) -> &str {
        &self.base_version
    }

    /// `(release, kind)` for each kind tests/data/bot-api-later.json adds to it.
    pub fn later_kinds(&self) -> Vec<(&str, &str)> {
        self.later_kinds
            .iter()
            .map(|(v, k)| (v.as_str(), k.as_str()))
            .collect()
    }

    /// One update of `kind` as compact JSON; the same arguments give the same bytes.
    pub fn update(&self, kind: &str, update_id: i64, seed: u64) -> Vec<u8> {
        let field = self
            .update_fields()
            .find(|f| f.name == kind)
            .unwrap_or_else(|| panic!("{kind:?} is not a field of Update"));
        let mut gen = Gen::new(self, kind, seed_for(kind, update_id, seed));
        let _ = write!(gen.out, r#"{{"update_id":{update_id},"{kind}":"#);
        gen.value(&field.types[0], kind, 1, &Scope::default());
        gen.out.push('}');
        gen.out.into_bytes()
    }

    /// `count` updates with consecutive ids from `first_id`, every kind in turn;
    /// every 50th is `story_reaction`, a kind no Bot API has, as a future one would look.
    pub fn mixed(&self, first_id: i64, count: usize, seed: u64) -> Vec<Vec<u8>> {
        let kinds = self.kinds();
        let mut next_kind = 0;
        let mut updates = Vec::with_capacity(count);
        for (i, update_id) in (first_id..).take(count).enumerate() {
            if i % 50 == 49 {
                updates.push(self.future_update(update_id, seed));
            } else {
                updates.push(self.update(&kinds[next_kind % kinds.len()], update_id, seed));
                next_kind += 1;
            }
        }
        updates
    }

    fn future_update(&self, update_id: i64, seed: u64) -> Vec<u8> {
        let kind = "story_reaction";
        let mut gen = Gen::new(self, kind, seed_for(kind, update_id, seed));
        let scope = gen.scope_for("", true, 1, &Scope::default());
        let _ = write!(gen.out, r#"{{"update_id":{update_id},"{kind}":{{"chat":"#);
        gen.chat("chat", &scope);
        gen.out.push_str(r#","from":"#);
        gen.user("from", &scope);
        let story_id = 1 + gen.rng.below(5000);
        let emoji = gen.rng.pick(&EMOJI);
        let _ = write!(gen.out, r#","story_id":{story_id},"emoji":"{emoji}"}}}}"#);
        gen.out.into_bytes()
    }

    fn update_fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.types["Update"]
            .fields
            .iter()
            .filter(|f| f.name != "update_id")
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// What the wire contract says an update's kind, chat id and user id are: an
/// explicit per-kind table, independent of the relay's code.
pub fn expected_routing(update: &Value) -> (String, Option<i64>, Option<i64>) {
    let unknown = || ("unknown".to_owned(), None, None);
    let Some(object) = update.as_object() else {
        return unknown();
    };
    let mut fields = object
        .iter()
        .filter(|(name, _)| name.as_str() != "update_id");
    let (Some((kind, body)), None) = (fields.next(), fields.next()) else {
        return unknown();
    };
    if !is_field_name(kind) {
        return unknown();
    }
    let user = id_at(body, &["from", "id"]).or_else(|| id_at(body, &["user", "id"]));
    (kind.clone(), expected_chat(kind, body), user)
}

fn expected_chat(kind: &str, body: &Value) -> Option<i64> {
    match kind {
        "callback_query" => id_at(body, &["message", "chat", "id"]),
        "poll_answer" => id_at(body, &["voter_chat", "id"]),
        "business_connection" => id_at(body, &["user_chat_id"]),
        k if CHAT_KINDS.contains(&k) || !CHATLESS_KINDS.contains(&k) => {
            id_at(body, &["chat", "id"])
        }
        _ => None,
    }
}

fn id_at(value: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_i64()
}

/// A name that could be a Bot API field; anything else is not trusted as a kind.
fn is_field_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Each union member's discriminator: its name minus the members' common prefix, in snake_case.
fn union_tags(types: &HashMap<String, TypeDef>) -> HashMap<String, String> {
    let mut tags = HashMap::new();
    // Sorted, so a member of several unions gets the same tag on every run.
    let mut unions: Vec<(&String, &TypeDef)> = types
        .iter()
        .filter(|(_, d)| !d.subtypes.is_empty())
        .collect();
    unions.sort_by_key(|(name, _)| *name);
    for (_, def) in unions {
        let members: Vec<&str> = def
            .subtypes
            .iter()
            .map(String::as_str)
            .filter(|s| types.get(*s).is_some_and(|t| !t.fields.is_empty()))
            .collect();
        let prefix = common_word_prefix(&members);
        for member in members {
            tags.entry(member.to_owned())
                .or_insert_with(|| snake_case(&member[prefix..]));
        }
    }
    for (member, tag) in TAG_OVERRIDES {
        tags.insert(member.to_owned(), tag.to_owned());
    }
    tags
}

/// Length of the longest prefix shared by all names that ends before a capital letter.
fn common_word_prefix(names: &[&str]) -> usize {
    let Some(first) = names.first() else { return 0 };
    let starts_word = |n: &str, i: usize| n.as_bytes().get(i).is_some_and(u8::is_ascii_uppercase);
    (0..first.len())
        .rev()
        .find(|&i| {
            names
                .iter()
                .all(|n| n.get(..i) == first.get(..i) && starts_word(n, i))
        })
        .unwrap_or(0)
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn is_primitive(ty: &str) -> bool {
    matches!(ty, "Integer" | "Float" | "String" | "Boolean" | "True")
}

/// True for objects and arrays of objects: the things that make an update deep.
fn is_object_type(ty: &str) -> bool {
    let mut inner = ty;
    while let Some(rest) = inner.strip_prefix("Array of ") {
        inner = rest;
    }
    !is_primitive(inner)
}

fn is_message_type(ty: &str) -> bool {
    matches!(ty, "Message" | "MaybeInaccessibleMessage")
}

fn is_channel_kind(kind: &str) -> bool {
    kind.ends_with("channel_post")
}

/// Who and where the object being written is about, so related fields agree.
#[derive(Clone, Copy, Default)]
struct Scope {
    chat: Option<usize>,
    user: Option<usize>,
    content: Option<&'static str>,
    anonymous_vote: bool,
}

/// One generation run: a seeded generator writing into `out`.
struct Gen<'a> {
    corpus: &'a Corpus,
    kind: &'a str,
    rng: Rng,
    out: String,
}

impl<'a> Gen<'a> {
    fn new(corpus: &'a Corpus, kind: &'a str, seed: u64) -> Gen<'a> {
        Gen {
            corpus,
            kind,
            rng: Rng(seed),
            out: String::with_capacity(1024),
        }
    }

    /// Writes a value of type expression `ty` found in field `field`, at object depth `depth`.
    fn value(&mut self, ty: &str, field: &str, depth: usize, scope: &Scope) {
        if let Some(inner) = ty.strip_prefix("Array of ") {
            return self.array(inner, field, depth, scope);
        }
        match ty {
            "Integer" => self.integer(field, scope),
            "Float" => self.float(field),
            "String" => self.string(field),
            "Boolean" => self.boolean(),
            "True" => self.out.push_str("true"),
            "Chat" => self.chat(field, scope),
            "User" => self.user(field, scope),
            _ => self.named(ty, field, depth, scope),
        }
    }

    fn named(&mut self, ty: &str, field: &str, depth: usize, scope: &Scope) {
        let corpus = self.corpus;
        let Some(def) = corpus.types.get(ty) else {
            panic!("type {ty:?} is in neither {TYPES_FILE} nor {LATER_FILE}");
        };
        if def.subtypes.is_empty() {
            return self.object(ty, &def.fields, depth, scope);
        }
        let member = self.pick_member(&def.subtypes, depth);
        self.value(member, field, depth, scope)
    }

    /// Any member near the top; deeper, the smallest, so unions like RichText end.
    fn pick_member<'t>(&mut self, members: &'t [String], depth: usize) -> &'t str {
        let corpus = self.corpus;
        let size = |m: &String| corpus.types.get(m).map_or(0, |t| t.fields.len());
        let allowed: Vec<&String> = members
            .iter()
            .filter(|m| !(depth > 2 && m.as_str() == "Message"))
            .collect();
        if depth > 3 {
            return allowed
                .iter()
                .min_by_key(|m| size(m))
                .map_or("String", |m| m.as_str());
        }
        // Most messages referred to (under a button, pinned) are still accessible.
        if allowed.first().is_some_and(|m| m.as_str() == "Message") && self.rng.below(10) < 8 {
            return "Message";
        }
        allowed[self.rng.below(allowed.len() as u64) as usize]
    }

    fn object(&mut self, name: &str, fields: &'a [FieldDef], depth: usize, parent: &Scope) {
        if depth > MAX_DEPTH {
            return self.out.push_str("{}");
        }
        let has_chat = fields.iter().any(|f| f.name == "chat");
        let scope = self.scope_for(name, has_chat, depth, parent);
        let optional = fields.iter().filter(|f| !f.required).count() as u64;
        self.out.push('{');
        let mut first = true;
        for (i, field) in fields.iter().enumerate() {
            let Some(ty) = self.field_type(field) else {
                continue;
            };
            if !self.include(name, field, ty, depth, optional, &scope) {
                continue;
            }
            if !first {
                self.out.push(',');
            }
            first = false;
            let _ = write!(self.out, "\"{}\":", field.name);
            match self.tag(name, i, field, ty) {
                Some(tag) => self.write_str(tag),
                None => self.value(ty, &field.name, depth + 1, &scope),
            }
        }
        self.out.push('}');
    }

    /// A union member's discriminator, written in place of its first field.
    fn tag(&mut self, name: &str, index: usize, field: &FieldDef, ty: &str) -> Option<&'a str> {
        if name == "MessageEntity" && field.name == "type" {
            return Some(self.rng.pick(&ENTITY_TYPES));
        }
        let corpus = self.corpus;
        let is_discriminator = index == 0
            && ty == "String"
            && matches!(field.name.as_str(), "type" | "status" | "source");
        corpus
            .tags
            .get(name)
            .filter(|_| is_discriminator)
            .map(String::as_str)
    }

    /// One of the field's alternative types; None for file uploads, which updates never hold.
    fn field_type(&mut self, field: &'a FieldDef) -> Option<&'a str> {
        let types: Vec<&str> = field
            .types
            .iter()
            .map(String::as_str)
            .filter(|t| *t != "InputFile")
            .collect();
        if types.is_empty() {
            return None;
        }
        Some(types[self.rng.below(types.len() as u64) as usize])
    }

    fn include(
        &mut self,
        owner: &str,
        field: &FieldDef,
        ty: &str,
        depth: usize,
        optional: u64,
        scope: &Scope,
    ) -> bool {
        if let Some(forced) = self.forced(owner, &field.name, scope) {
            return forced;
        }
        if field.required {
            return true;
        }
        if let Some((_, only)) = FIXED_OPTIONALS.iter().find(|(t, _)| *t == owner) {
            return only.contains(&field.name.as_str());
        }
        // Messages nest only one level (reply_to_message in a top-level message).
        if is_message_type(ty) && depth > 1 {
            return false;
        }
        if is_object_type(ty) && depth + 1 > MAX_OPTIONAL_OBJECT_DEPTH {
            return false;
        }
        let per_mille = if owner == "Message" {
            MESSAGE_EXTRAS
                .iter()
                .find(|(f, _)| *f == field.name)
                .map_or(0, |(_, p)| *p)
        } else {
            let expected = EXPECTED_OPTIONAL[depth.min(EXPECTED_OPTIONAL.len() - 1)];
            (expected / optional.max(1)).min(900)
        };
        self.rng.below(1000) < per_mille
    }

    /// Fields whose presence is decided by the update's meaning, not by chance:
    /// routing needs them, or a real update of that kind always has them.
    fn forced(&self, owner: &str, field: &str, scope: &Scope) -> Option<bool> {
        if CONTENT_OWNERS.contains(&owner) && CONTENT.iter().any(|(c, _)| *c == field) {
            return Some(scope.content == Some(field));
        }
        if owner == "Message" {
            return self.forced_in_message(field, scope);
        }
        match (owner, field) {
            ("CallbackQuery", "message" | "data") => Some(true),
            ("CallbackQuery", "inline_message_id" | "game_short_name") => Some(false),
            ("MessageReactionUpdated", "user") => Some(true),
            ("MessageReactionUpdated", "actor_chat") => Some(false),
            ("PollAnswer", "voter_chat") => Some(scope.anonymous_vote),
            ("PollAnswer", "user") => Some(!scope.anonymous_vote),
            _ => None,
        }
    }

    /// A message has one content, a sender (a user, or the channel itself), and
    /// the fields its kind implies.
    fn forced_in_message(&self, field: &str, scope: &Scope) -> Option<bool> {
        let content = scope.content.unwrap_or("text");
        let channel = is_channel_kind(self.kind);
        match field {
            "from" => Some(!channel),
            "sender_chat" => Some(channel),
            "edit_date" => Some(self.kind.starts_with("edited_")),
            "business_connection_id" => Some(self.kind.contains("business")),
            "reply_markup" if self.kind == "callback_query" => Some(true),
            "entities" if content != "text" => Some(false),
            "caption" | "caption_entities" if !MEDIA.contains(&content) => Some(false),
            _ => None,
        }
    }

    /// A nested object keeps its parent's chat (a reply is in the same chat); in a
    /// private chat the user is the chat's owner.
    fn scope_for(&mut self, name: &str, has_chat: bool, depth: usize, parent: &Scope) -> Scope {
        let chat = match parent.chat {
            Some(chat) => Some(chat),
            None if has_chat => Some(self.pick_chat(depth)),
            None => None,
        };
        let user = match chat.filter(|c| chat_kind(*c) == "private") {
            Some(private) => private,
            None => self.rng.below(USERS as u64) as usize,
        };
        let content = self.pick_content(name, depth);
        // Anonymous polls are answered by a chat, the others by a user.
        let anonymous_vote = name == "PollAnswer" && self.rng.below(10) < 3;
        Scope {
            chat,
            user: Some(user),
            content,
            anonymous_vote,
        }
    }

    /// Chats plausible for the update's kind: channels post, businesses talk in private.
    fn pick_chat(&mut self, depth: usize) -> usize {
        let range = match self.kind {
            _ if depth > 1 => 0..CHATS,
            k if is_channel_kind(k) => 17..CHATS,
            "business_message" | "edited_business_message" | "deleted_business_messages" => 0..7,
            "chat_member" => 7..17,
            "chat_join_request"
            | "chat_boost"
            | "removed_chat_boost"
            | "message_reaction_count" => 7..CHATS,
            _ => 0..CHATS,
        };
        range.start + self.rng.below(range.len() as u64) as usize
    }

    /// A weighted choice among the contents the type has; none where objects
    /// would nest too deep; a nested message does not pin yet another message.
    fn pick_content(&mut self, owner: &str, depth: usize) -> Option<&'static str> {
        if !CONTENT_OWNERS.contains(&owner) || depth >= MAX_OPTIONAL_OBJECT_DEPTH {
            return None;
        }
        let corpus = self.corpus;
        let fields = &corpus.types[owner].fields;
        let choices: Vec<(&'static str, u64)> = CONTENT
            .into_iter()
            .filter(|(c, _)| fields.iter().any(|f| f.name == *c))
            .filter(|(c, _)| depth == 1 || *c != "pinned_message")
            .collect();
        let mut roll = self.rng.below(choices.iter().map(|(_, w)| w).sum());
        for (name, weight) in choices {
            if roll < weight {
                return Some(name);
            }
            roll -= weight;
        }
        None
    }

    fn array(&mut self, inner: &str, field: &str, depth: usize, scope: &Scope) {
        let count = if is_object_type(inner) && depth > MAX_OPTIONAL_OBJECT_DEPTH + 1 {
            0
        } else {
            self.array_len(field)
        };
        self.out.push('[');
        for i in 0..count {
            if i > 0 {
                self.out.push(',');
            }
            self.value(inner, field, depth, scope);
        }
        self.out.push(']');
    }

    fn array_len(&mut self, field: &str) -> u64 {
        match field {
            "photo" => 3 + self.rng.below(2),
            "option_ids" | "new_chat_members" => 1,
            "old_reaction" | "new_reaction" => self.rng.below(3),
            _ => 1 + self.rng.below(2),
        }
    }

    fn chat(&mut self, field: &str, scope: &Scope) {
        let own_chat = field == "chat" || (field == "sender_chat" && is_channel_kind(self.kind));
        let index = match scope.chat.filter(|_| own_chat) {
            Some(index) => index,
            // Other chats (sender_chat, voter_chat, ...) are groups or channels.
            None => 7 + self.rng.below((CHATS - 7) as u64) as usize,
        };
        let kind = chat_kind(index);
        let _ = write!(self.out, r#"{{"id":{},"type":"{kind}""#, chat_id(index));
        if kind == "private" {
            let _ = write!(
                self.out,
                r#","first_name":"{}""#,
                FIRST_NAMES[index % FIRST_NAMES.len()]
            );
        } else {
            let _ = write!(self.out, r#","title":"{}""#, TITLES[index % TITLES.len()]);
        }
        if kind == "channel" || index % 3 == 0 {
            let _ = write!(
                self.out,
                r#","username":"{}_{index}""#,
                WORDS[index % WORDS.len()]
            );
        }
        if kind == "supergroup" && index % 2 == 0 {
            self.out.push_str(r#","is_forum":true"#);
        }
        self.out.push('}');
    }

    fn user(&mut self, field: &str, scope: &Scope) {
        let index = match scope.user.filter(|_| matches!(field, "from" | "user")) {
            Some(index) => index,
            None => self.rng.below(USERS as u64) as usize,
        };
        let is_bot = matches!(field, "via_bot" | "bot" | "sender_business_bot");
        let first = FIRST_NAMES[index % FIRST_NAMES.len()];
        let _ = write!(
            self.out,
            r#"{{"id":{},"is_bot":{is_bot},"first_name":"{first}""#,
            user_id(index)
        );
        if index % 3 != 0 {
            let _ = write!(
                self.out,
                r#","last_name":"{}""#,
                LAST_NAMES[index % LAST_NAMES.len()]
            );
        }
        if index % 4 != 3 || is_bot {
            let suffix = if is_bot { "_bot" } else { "" };
            let _ = write!(
                self.out,
                r#","username":"{}{index}{suffix}""#,
                WORDS[index % WORDS.len()]
            );
        }
        if !is_bot {
            let _ = write!(
                self.out,
                r#","language_code":"{}""#,
                LANGS[index % LANGS.len()]
            );
        }
        if index % 7 == 0 {
            self.out.push_str(r#","is_premium":true"#);
        }
        self.out.push('}');
    }

    fn integer(&mut self, field: &str, scope: &Scope) {
        let n: i64 = match field {
            "user_chat_id" => user_id(scope.user.unwrap_or(0)),
            f if f == "date" || f.ends_with("_date") => 1_750_000_000 + self.below(20_000_000),
            f if f.ends_with("message_id") || f == "message_ids" => 1 + self.below(900_000),
            f if f.ends_with("chat_id") => chat_id(self.below(CHATS as i64) as usize),
            f if f.ends_with("user_id") => user_id(self.below(USERS as i64) as usize),
            "width" | "height" => 90 + self.below(1190),
            "file_size" => 1_000 + self.below(5_000_000),
            f if f.ends_with("color") => self.below(0x100_0000),
            f if f.ends_with("duration") || f == "live_period" => 1 + self.below(600),
            "total_amount" | "amount" | "star_count" => 1 + self.below(10_000),
            "value" => 1 + self.below(6),
            "offset" => self.below(40),
            "length" => 1 + self.below(20),
            _ => self.below(1000),
        };
        let _ = write!(self.out, "{n}");
    }

    fn boolean(&mut self) {
        let value = self.rng.pick(&["false", "true"]);
        self.out.push_str(value);
    }

    fn float(&mut self, field: &str) {
        match field {
            "latitude" => self.fixed5(90),
            "longitude" => self.fixed5(180),
            _ => {
                let odd = self.rng.pick(&ODD_FLOATS);
                self.out.push_str(odd);
            }
        }
    }

    /// A coordinate within ±`max` degrees written with 5 decimals, e.g. `51.50722`.
    fn fixed5(&mut self, max: i64) {
        let v = self.below(2 * max * 100_000) - max * 100_000;
        let sign = if v < 0 { "-" } else { "" };
        let _ = write!(
            self.out,
            "{sign}{}.{:05}",
            v.abs() / 100_000,
            v.abs() % 100_000
        );
    }

    fn string(&mut self, field: &str) {
        let text = match field {
            "text" | "caption" | "quote" | "query" | "message_text" | "explanation"
            | "question" => self.rng.pick(&TEXTS).to_owned(),
            "first_name" | "last_name" => self.rng.pick(&FIRST_NAMES).to_owned(),
            "title" | "name" | "set_name" => self.rng.pick(&TITLES).to_owned(),
            "emoji" => self.rng.pick(&EMOJI).to_owned(),
            "language_code" => self.rng.pick(&LANGS).to_owned(),
            "currency" => self.rng.pick(&CURRENCIES).to_owned(),
            "mime_type" => self.rng.pick(&MIMES).to_owned(),
            "data" => format!("btn:{}", self.below(100)),
            "chat_instance" => format!("{}", self.below(i64::MAX) - i64::MAX / 2),
            "type" => "regular".to_owned(),
            "chat_type" => self
                .rng
                .pick(&["sender", "private", "group", "supergroup"])
                .to_owned(),
            f if f.ends_with("file_unique_id") => format!("AQAD{}", self.base64(12)),
            f if f.ends_with("file_id") => format!("AgACAgIAAxkBAAI{}", self.base64(56)),
            f if f.ends_with("url") || f.ends_with("link") => {
                format!(
                    r"https:\/\/t.me\/{}\/{}",
                    self.rng.pick(&WORDS),
                    self.below(10_000)
                )
            }
            f if f == "id" || f.ends_with("_id") => format!("{}", self.below(i64::MAX)),
            _ => format!("{} {}", self.rng.pick(&WORDS), self.rng.pick(&WORDS)),
        };
        self.write_str(&text);
    }

    /// Writes already-escaped string contents between quotes.
    fn write_str(&mut self, contents: &str) {
        self.out.push('"');
        self.out.push_str(contents);
        self.out.push('"');
    }

    fn base64(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(BASE64URL[self.below(64) as usize]))
            .collect()
    }

    fn below(&mut self, n: i64) -> i64 {
        self.rng.below(n.unsigned_abs()) as i64
    }
}

/// The chat pool: 0..7 private (users 0..7), 7..11 groups, 11..17 supergroups, 17..20 channels.
const CHATS: usize = 20;

fn chat_kind(index: usize) -> &'static str {
    match index {
        0..=6 => "private",
        7..=10 => "group",
        11..=16 => "supergroup",
        _ => "channel",
    }
}

fn chat_id(index: usize) -> i64 {
    let h = (mix(index as u64 ^ 0xC4A7) % 1_000_000_000) as i64;
    match chat_kind(index) {
        "private" => user_id(index),
        // Old basic groups have 9 digits, newer ones -4xxxxxxxxx.
        "group" if index % 2 == 0 => -(100_000_000 + h % 900_000_000),
        "group" => -(4_000_000_000 + h),
        // Supergroups and channels: -100 followed by ten digits.
        _ => -(1_001_000_000_000 + h * 8),
    }
}

/// The user pool: 8–9 digit ids of old accounts, 10-digit ones, and new ids up to 2^40.
fn user_id(index: usize) -> i64 {
    if index == 2 {
        return 1 << 40;
    }
    let h = mix(index as u64 ^ 0x05EE_D5EE);
    match index % 3 {
        0 => 10_000_000 + (h % 990_000_000) as i64,
        1 => 1_000_000_000 + (h % 7_000_000_000) as i64,
        _ => (1 << 32) + (h % ((1 << 40) - (1 << 32))) as i64,
    }
}

fn seed_for(kind: &str, update_id: i64, seed: u64) -> u64 {
    let fnv = kind.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    mix(fnv ^ mix(update_id as u64) ^ mix(seed.wrapping_add(0x5EED)))
}

/// SplitMix64's finalizer: a cheap, well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: deterministic everywhere, unlike a `rand` generator across versions.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
