#![doc = include_str!("../README.md")]

pub mod admin;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod durability;
pub mod events;
pub mod health;
pub mod jobs;
pub mod mail;
pub mod outbox;
pub mod problem;
pub mod push;
pub mod realtime;
pub mod storage;
pub mod tls;
pub mod users;

pub use admin::{
    AdminError, DeadLetter, EventAdmin, InstanceInfo, Instances, JobDetail, MinuteCount,
    OutboxFailure, OutboxOverview, QueueAdmin, QueueOverview, SocketRegistry, StreamGroup,
    StreamOverview, SupportAdmin, SupportDevice, SupportUser,
};
pub use auth::{IdentityAdmin, IdentityAdminError, InvalidToken, TokenVerifier, VerifyTokenError};
pub use cache::{Cache, CacheError};
pub use clock::{Clock, SystemClock};
pub use durability::{ReplicaAcks, ReplicaShortfall, ReplicaWait};
pub use events::{
    ConsumeEventsError, EventConsumer, EventHandler, EventPublisher, HandleEventError,
    PublishEventError,
};
pub use health::{HealthProbe, ProbeError};
pub use jobs::{
    CancelJobsError, CancelledJobs, EnqueueJobError, HandleJob, Job, JobContext, JobFailure,
    JobHandler, JobId, JobQueue, NewJob, OwnedJob, Typed, UniqueKey,
};
pub use mail::{
    ClaimWelcomeOutcome, Mailer, SendHolder, SendMailError, WelcomeLedger, WelcomeLedgerError,
    WelcomeRecord,
};
pub use outbox::{LeaderTerm, Outbox, OutboxError, OutboxRecord};
pub use problem::{FieldError, PROBLEM_JSON, Problem};
pub use push::{PushMessage, PushSender, SendPushError};
pub use realtime::{
    Audience, Direction, Disconnect, Fanout, FanoutError, FanoutMessage, FanoutSink,
    HistoryOptions, HistoryRead, MessageDoc, NamespaceOptions, Notification, Notifier, NotifyError,
    PresenceEntry, PresenceStore, Publication, Realtime, SocketDelivery, StreamPosition,
    TopicHistory, TopicPolicy,
};
pub use storage::{
    CompleteUploadError, CompletedUpload, Completion, CreateUploadError, ObjectInfo, ObjectStore,
    PostPolicy, PresignedPost, QuotaUse, StorageError, UploadQuota, UploadRepository,
    UploadStoreError,
};
pub use tls::{TlsHandshake, TlsMaterial};
pub use users::{
    DeletePushTokenError, DeleteUserError, FindUserError, ListPushTokensError, PushTokenKey,
    PushTokenRepository, RegisterPushTokenError, RegisteredPushToken, StoredEvent,
    UnregisterPushTokenError, UpsertOutcome, UpsertProfileError, UpsertedProfile, UserRepository,
};
