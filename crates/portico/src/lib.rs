//! portico: the server library behind the `portico` binary — configuration, the HTTP
//! server, import, and the role subcommands. Tests drive the same entry points.

#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod consent;
pub mod export;
pub mod identity;
pub mod import;
pub mod server;
