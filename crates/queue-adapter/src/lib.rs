#![doc = include_str!("../README.md")]

mod redis;

pub use deadpool_redis::Pool as RedisPool;
pub use redis::{RedisHealthProbe, RedisSettings, build_pool};
