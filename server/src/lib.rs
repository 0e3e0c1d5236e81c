//! The LearnSync server: HTTP + WebSocket sync, REST API, storage, admin console.
//!
//! A thin shell around `sync-core`: [`sync`] carries out what the sans-IO hub decides
//! (frames, loads, stores), [`store`] is the database behind one trait, and the REST areas
//! ([`auth`], [`courses`], [`learning`], [`reports`], [`logs`], [`admin`]) are axum routers
//! merged in [`app`]. Typical use: `Application::build(config).await?.run_until_stopped()`.
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod config;
pub mod courses;
pub mod erasure;
pub mod error;
pub mod export;
pub mod health;
pub mod imports;
pub mod learning;
pub mod listener;
pub mod logs;
pub mod model;
pub mod openapi;
pub mod reports;
pub mod state;
pub mod store;
pub mod sync;
pub mod web;

pub use app::Application;
pub use config::Config;
