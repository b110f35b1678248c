#![doc = include_str!("../README.md")]

mod client;

pub use client::connect;
pub use fred::clients::Client as RedisClient;
