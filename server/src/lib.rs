//! `stasis-server`: the HTTP face of Stasis — the E2B/Novita control plane (`/sandboxes`, …) and the envd
//! plane (Connect `process.Process` / `filesystem.Filesystem`, `/files`) on one origin, so the vendors'
//! client SDKs work against a local Stasis unmodified (see `docs/sdk-compat.md`).
//!
//! [`app`] builds the router from an [`AppState`]; [`serve`] runs it on a listener until SIGINT/SIGTERM and
//! then pauses every running sandbox.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod connect;
pub mod error;
pub mod guest;
pub mod interpreter;
pub mod metrics;
pub mod openapi;
pub mod processes;
pub mod proxy;
pub mod pty;
pub mod sampler;
pub mod serve;
pub mod state;
pub mod templates;
pub mod time;
pub mod watch;

pub use app::app;
pub use config::ServerConfig;
pub use error::ApiError;
pub use serve::serve;
pub use state::AppState;
