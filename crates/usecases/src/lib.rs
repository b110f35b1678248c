#![doc = include_str!("../README.md")]

pub mod account;
pub mod export;
pub mod messages;
pub mod profiles;
pub mod push;
pub mod push_tokens;
pub mod realtime;
pub mod relay;
pub mod uploads;
pub mod welcome;

pub use account::{
    ACCOUNT_DELETION_GROUP, AccountDeletionTrigger, EraseAccount, EraseAccountJob, EraseStep,
    ForgetDeletions, ForgetDeletionsJob, LATE_SWEEP_AFTER, TOMBSTONE_RETENTION,
};
pub use export::{ExportError, ExportedDevice, UserData, UserExport};
pub use messages::{PROFILE_UPDATED, realtime_messages};
pub use profiles::{DeleteAccountError, GetProfileError, ProfileService, UpdateProfileError};
pub use push::{
    DeliveryOutcome, DeviceDelivery, FanOutPush, NotifyUserError, PUSH_QUEUE, PushDeviceJob,
    PushNotifications, PushSendJob, SendPushToDevice, SendTestPushError, TestPushReport,
};
pub use push_tokens::{
    ListPushTokensError, PushTokenService, RegisterDeviceError, UnregisterDeviceError,
};
pub use realtime::{DELIVERY_KEY, DeliverJob, SocketFirst};
pub use relay::{OutboxRelay, RelayError, RelayPass, RelaySettings};
pub use uploads::{
    CleanUpUploads, CleanUpUploadsJob, CompletedView, StartedUpload, UploadError, UploadService,
    UploadSettings, UploadView,
};
pub use welcome::{
    ForgetRecipientsJob, ForgetWelcomeRecipients, MAIL_QUEUE, SendWelcomeMail, WELCOME_GROUP,
    WelcomeMailJob, WelcomeMailTrigger,
};
