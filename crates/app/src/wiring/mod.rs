//! Which adapter goes behind which port, per role, one file per concern:
//!
//! - [`infrastructure`]: the pools and clients the process shares
//!   ([`Infrastructure::connect`], once per process);
//! - [`adapters`]: the adapter chosen for each port from settings (token
//!   verifier, push, identity administration, object storage);
//! - [`realtime`]: the WebSocket hub over Redis, and the heartbeat;
//! - [`servers`]: the listeners (API, operational routes, `/metrics`, the
//!   ops console);
//! - [`workers`]: the worker role as one list of consumer groups, job
//!   handlers and schedules.

mod adapters;
mod infrastructure;
mod realtime;
mod servers;
mod workers;

pub(crate) use adapters::fcm_sender;
pub use infrastructure::Infrastructure;
pub(crate) use realtime::{heartbeat, hub};
pub(crate) use servers::{http_server, metrics_server, ops_server};
pub(crate) use workers::start_workers;
