//! `Health`: what `/readyz` reports. Each source says whether it is healthy; the
//! relay is ready when every source is and every sink can reach its broker.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Health {
    sources: Mutex<BTreeMap<String, bool>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records whether a bot's source is healthy now.
    pub fn set_source(&self, bot: &str, up: bool) {
        let mut sources = self.sources.lock().unwrap();
        // Every poll says so: no new key (an allocation) when the bot is known.
        match sources.get_mut(bot) {
            Some(state) => *state = up,
            None => {
                sources.insert(bot.to_owned(), up);
            }
        }
    }

    /// Forgets a bot this replica no longer runs.
    pub fn remove_source(&self, bot: &str) {
        self.sources.lock().unwrap().remove(bot);
    }

    /// Every source registered so far, with its state.
    pub fn sources(&self) -> BTreeMap<String, bool> {
        self.sources.lock().unwrap().clone()
    }

    pub fn all_sources_up(&self) -> bool {
        self.sources.lock().unwrap().values().all(|up| *up)
    }
}
