#![doc = include_str!("../README.md")]

pub mod client;
pub mod events;
pub mod identity;
pub mod mail;
pub mod network;
pub mod pagination;
pub mod push;
pub mod schema;
pub mod upload;
pub mod user;

pub use client::{AppPlatform, AppVersion, AppVersionPolicy, InvalidAppVersion, VersionVerdict};
pub use events::{
    DomainEvent, EmailVerified, EventEnvelope, ProfileUpdated, RawEvent, UndecodableEvent,
    UserCreated, UserDeleted,
};
pub use identity::VerifiedIdentity;
pub use mail::{Mail, WelcomeMail};
pub use pagination::{CursorCodec, CursorPage, InvalidCursor, KeysetPage, Page, PageRequest};
pub use push::{InvalidPlatform, InvalidPushToken, Platform, PushToken, PushTokenRecord};
pub use schema::FieldRule;
pub use upload::{InvalidUpload, Upload, UploadId, UploadLimits, UploadPurpose, UploadStatus};
pub use user::{
    DisplayName, Email, FirebaseUid, InvalidDisplayName, InvalidEmail, InvalidFirebaseUid,
    InvalidPhotoUrl, PhotoUrl, ProfileDefaults, ProfilePatch, User, UserId,
};
