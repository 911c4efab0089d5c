//! Why an operation of a role did not happen, and the one place it becomes a
//! gRPC status. Internal errors are logged with their context where they
//! happen and leave without their internals. Roles whose core needs nothing
//! more (scan, telephony) use this enum as theirs; the others (appointment,
//! signature, counter) have their own with extra variants.

use crate::retry::{Class, Classify};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is wrong (`InvalidArgument`).
    #[error("invalid {field}: {description}")]
    Invalid { field: String, description: String },
    /// No such resource (`NotFound`).
    #[error("{resource} `{name}` not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    /// `subject` is not in a state for this step (`FailedPrecondition`).
    #[error("{description}")]
    Refused {
        kind: String,
        subject: String,
        description: String,
    },
    /// A concurrent change won; the caller may start again (`Aborted`).
    #[error("{0}")]
    Conflict(String),
    /// A dependency (database, bus, another role) is down; the caller may
    /// retry (`Unavailable`).
    #[error("temporarily unavailable ({context}), retry later")]
    Unavailable { context: String },
    /// A bug or a broken dependency, logged where it happened (`Internal`).
    #[error("internal error ({context})")]
    Internal { context: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        use crate::grpc;
        match e {
            Error::Invalid { field, description } => grpc::invalid_argument(&field, description),
            Error::NotFound { resource, name } => grpc::not_found(resource, &name),
            Error::Refused {
                kind,
                subject,
                description,
            } => grpc::failed_precondition(&kind, &subject, description),
            Error::Conflict(m) => Status::aborted(m),
            Error::Unavailable { context } => {
                Status::unavailable(format!("temporarily unavailable ({context}), retry later"))
            }
            Error::Internal { context } => Status::internal(format!("internal error ({context})")),
        }
    }
}

/// A wrong request or an unknown resource is not worth retrying; the rest
/// may pass later.
impl Classify for Error {
    fn class(&self) -> Class {
        match self {
            Error::Invalid { .. } | Error::NotFound { .. } => Class::Permanent,
            _ => Class::Transient,
        }
    }
}

pub fn invalid_argument(field: &str, description: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.to_owned(),
        description: description.into(),
    }
}

pub fn not_found(resource: &'static str, name: &str) -> Error {
    Error::NotFound {
        resource,
        name: name.to_owned(),
    }
}

pub fn failed_precondition(kind: &str, subject: &str, description: impl Into<String>) -> Error {
    Error::Refused {
        kind: kind.to_owned(),
        subject: subject.to_owned(),
        description: description.into(),
    }
}

/// Log an internal error with its context; the caller gets the context only.
pub fn internal(context: &str, err: impl std::fmt::Display) -> Error {
    tracing::error!(error = %err, context, "internal error");
    Error::Internal {
        context: context.to_owned(),
    }
}

/// [`internal`] as a `map_err` argument: `.map_err(internal_err("issue ticket"))`.
pub fn internal_err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| internal(context, e)
}

/// Log a dependency outage with its context; the caller is told to retry.
pub fn unavailable(context: &str, err: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %err, context, "dependency unavailable");
    Error::Unavailable {
        context: context.to_owned(),
    }
}
