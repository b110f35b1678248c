#![doc = include_str!("../README.md")]

pub mod events;
pub mod jobs;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
mod wiring;

pub use settings::{AppEnv, LogFormat, Settings, SettingsError};
pub use startup::{Application, Role};
pub use wiring::Infrastructure;
