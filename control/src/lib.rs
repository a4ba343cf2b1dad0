//! Spray's control plane as a library: configuration, health checks, the controller that
//! publishes snapshots, the socket-mode runner and the CLI. The `spray` binary is a thin
//! `main` over it; integration tests use it directly.

pub mod api;
pub mod bench;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod health;
pub mod import;
pub mod metrics;
pub mod notify;
pub mod process_stats;
pub mod report;
pub mod run;
pub mod state;
