//! The Bot API gateway: services publish Bot API calls to the broker, and the owner
//! replica of each bot executes them within Telegram's flood limits.

pub mod broker;
pub mod call;
pub mod config;
pub mod executor;
pub mod limiter;
pub mod methods;
pub mod metrics;
pub mod recent;
pub mod snapshot;

pub use config::OutboundConfig;
