//! Test harness for guichet: every test gets its own NATS subject and stream
//! prefix, its own databases (SQLite files in a temporary directory, or
//! fresh PostgreSQL databases), random ports, and tokens.
//!
//! Real components only: NATS with JetStream at `GUICHET_TEST_NATS_URL`
//! (default `nats://127.0.0.1:4222`) and PostgreSQL at `GUICHET_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). A test needing
//! PostgreSQL where none answers prints a notice and returns, unless
//! `GUICHET_TEST_REQUIRE_PG=1` (CI sets it) makes that a failure. Logs print
//! only when `TEST_LOG` is set.

use std::future::Future;
use std::time::Duration;

use guichet::{GuichetConfig, Role, RunningApp};
use guichet_platform::auth::{Authenticator, Role as AuthRole};
use sea_orm::{ConnectionTrait, Database};
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::transport::Channel;

pub use guichet_proto as proto;
pub use prost_types;

/// The CTI webhook token of every test environment.
pub const CTI_TOKEN: &str = "test-cti-token-0123456789";

pub const SIGNING_KEY: &str = "test-signing-key-0123456789abcdef0123456789";

/// Which database backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub mod browser;
mod channels;
mod clients;
pub mod email;
mod env;
mod http;
mod notification;
mod process;
mod router;
pub mod scan;
mod signature;

pub use channels::*;
pub use clients::*;
pub use env::*;
pub use http::*;
pub use notification::*;
pub use process::*;
pub use router::*;
pub use signature::*;
