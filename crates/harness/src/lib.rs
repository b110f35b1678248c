#![doc = include_str!("../README.md")]

pub mod auth;
pub mod tools;
