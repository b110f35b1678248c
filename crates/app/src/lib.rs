#![doc = include_str!("../README.md")]

pub mod cli;
pub mod doctor;
pub mod events;
pub mod jobs;
mod role;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
mod wiring;

pub use role::Role;
pub use settings::{AppEnv, LogFormat, Settings, SettingsError};
pub use startup::Application;
pub use wiring::Infrastructure;

/// The AsyncAPI document of `/ws`: the hub's envelopes and the use cases'
/// notifications (`app asyncapi`; checked in as `openapi/asyncapi.json`).
pub fn asyncapi() -> serde_json::Value {
    ws_hub::catalogue::asyncapi(&usecases::realtime_messages())
}
