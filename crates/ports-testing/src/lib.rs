//! The ports' test doubles and contract suites, a crate of their own so the
//! ports crate holds only the ports. A dev-dependency (and the test tools').
//!
//! Every fake here passes the same contract suite as the real adapter it
//! stands in for, so a test that passes against a fake means something.
//! Adapters run the suites through the `*_contract!` macros, which expand to
//! one `#[tokio::test]` per case.

mod cache;
pub mod contract;
mod fakes;
mod ledger;
pub mod objects;
mod push;
pub mod realtime;
mod store;

pub use cache::InMemoryCache;
pub use fakes::{
    FakeTokenVerifier, MailOutcome, ManualClock, RecordingIdentityAdmin, RecordingJobQueue,
    RecordingMailer, RecordingNotifier, RecordingPublisher,
};
pub use ledger::InMemoryWelcomeLedger;
pub use objects::{InMemoryObjectStore, ObjectClient};
pub use push::{PushOutcome, RecordingPushSender};
pub use realtime::{InMemoryFanout, InMemoryPresence};
pub use store::InMemoryStore;
