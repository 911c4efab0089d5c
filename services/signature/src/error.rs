//! Why a signature operation did not happen, and the one place it becomes a
//! gRPC status (the signing pages read the same status). Texts meant for
//! the citizen are French; internal errors are logged with their context
//! where they happen and leave without their internals.

use guichet_platform::retry::{Class, Classify};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is wrong (`InvalidArgument`).
    #[error("invalid {field}: {description}")]
    Invalid { field: String, description: String },
    /// No such request or signer (`NotFound`).
    #[error("{resource} `{name}` not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    /// The request is not in a state for this step (`FailedPrecondition`,
    /// French text).
    #[error("{description}")]
    Refused { kind: String, description: String },
    /// A concurrent change won; the caller may start again (`Aborted`).
    #[error("{0}")]
    Conflict(String),
    /// Too many codes asked for (`ResourceExhausted`).
    #[error("{0}")]
    Exhausted(String),
    /// A bug or a broken dependency, logged where it happened (`Internal`).
    #[error("internal error ({context})")]
    Internal { context: String },
    /// Another role (the dossier) answered with an error: passed on.
    #[error(transparent)]
    Upstream(#[from] Status),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        use guichet_platform::grpc;
        match e {
            Error::Invalid { field, description } => grpc::invalid_argument(&field, description),
            Error::NotFound { resource, name } => grpc::not_found(resource, &name),
            Error::Refused { kind, description } => {
                grpc::failed_precondition(&kind, "signature_request", description)
            }
            Error::Conflict(m) => Status::aborted(m),
            Error::Exhausted(m) => Status::resource_exhausted(m),
            Error::Internal { context } => Status::internal(format!("internal error ({context})")),
            Error::Upstream(s) => s,
        }
    }
}

/// What the job runner does with a failed job: a wrong request or an
/// unknown resource is given up, everything else is retried.
impl Classify for Error {
    fn class(&self) -> Class {
        match self {
            Error::Invalid { .. } | Error::NotFound { .. } => Class::Permanent,
            Error::Upstream(s) => s.class(),
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

pub fn precondition(kind: &str, description: &str) -> Error {
    Error::Refused {
        kind: kind.to_owned(),
        description: description.to_owned(),
    }
}

/// Log an internal error with its context; the caller gets the context only.
pub fn internal(context: &str, err: impl std::fmt::Display) -> Error {
    tracing::error!(error = %err, context, "internal error");
    Error::Internal {
        context: context.to_owned(),
    }
}

/// [`internal`] as a `map_err` argument.
pub fn internal_err<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| internal(context, e)
}
