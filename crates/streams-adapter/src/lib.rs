#![doc = include_str!("../README.md")]

mod admin;
mod cache;
mod client;
mod consumer;
mod fanout;
mod history;
pub mod inspect;
mod instances;
mod presence;
mod publisher;
mod reply;
mod wire;

pub use admin::{DeadLetter, StreamAdmin};
pub use cache::RedisCache;
pub use client::{connect, connect_with_tls, rustls_config};
pub use consumer::{ConsumerSettings, RedisStreamConsumer};
pub use fanout::RedisFanout;
pub use fred::clients::Client as RedisClient;
pub use inspect::{RedisInspection, RedisServer, inspect};
pub use instances::{RedisInstances, RedisSocketRegistry};
pub use presence::RedisPresence;
pub use publisher::{RedisStreamPublisher, cluster_stream_key, stream_key};
