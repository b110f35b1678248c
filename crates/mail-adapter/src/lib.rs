#![doc = include_str!("../README.md")]

mod mailer;
pub mod templates;

pub use mailer::{LettreMailer, MailSettings};
