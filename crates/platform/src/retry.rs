//! One answer to "try again, or give up?" for every role.
//!
//! A failed job, a message a consumer could not handle and a notification a
//! provider refused all end in the same question. Each error type that is
//! retried says which [`Class`] it is ([`Classify`]); the job runner
//! ([`crate::jobs`]), the bus consumers and the notification role act on
//! that class, and on nothing else (no gRPC codes or ad-hoc enums read at
//! the retry site).

use std::fmt;

use crate::bus::{BusError, HandlerError};

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A peer is down, a database is busy, a timeout: try again later.
    Transient,
    /// Retrying cannot help (unknown resource, invalid content, refused):
    /// give up now and keep the reason.
    Permanent,
}

/// An error that knows whether retrying it may help.
pub trait Classify {
    fn class(&self) -> Class;

    fn is_transient(&self) -> bool {
        self.class() == Class::Transient
    }
}

/// Database errors are transient: the row is still there to retry on, and a
/// broken statement fails again and is given up by the attempt bound.
impl Classify for sea_orm::DbErr {
    fn class(&self) -> Class {
        Class::Transient
    }
}

/// A call to another role: the answers that say the request itself is wrong
/// (unknown resource, invalid argument, not allowed) are permanent; every
/// other code (unavailable, internal, deadline…) may pass later.
impl Classify for tonic::Status {
    fn class(&self) -> Class {
        use tonic::Code;
        match self.code() {
            Code::NotFound | Code::InvalidArgument | Code::PermissionDenied => Class::Permanent,
            _ => Class::Transient,
        }
    }
}

/// NATS and JetStream are infrastructure: always worth another try.
impl Classify for BusError {
    fn class(&self) -> Class {
        Class::Transient
    }
}

impl Classify for HandlerError {
    fn class(&self) -> Class {
        match self {
            HandlerError::Permanent(_) => Class::Permanent,
            HandlerError::Transient(_) => Class::Transient,
        }
    }
}

/// A failure with its class and a message, for work whose own errors are
/// not typed (a job body, a provider answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub class: Class,
    pub message: String,
}

impl Failure {
    pub fn transient(e: impl fmt::Display) -> Failure {
        Failure {
            class: Class::Transient,
            message: e.to_string(),
        }
    }

    pub fn permanent(e: impl fmt::Display) -> Failure {
        Failure {
            class: Class::Permanent,
            message: e.to_string(),
        }
    }

    /// Keep the class of a classified error, and its text.
    pub fn of<E: Classify + fmt::Display>(e: E) -> Failure {
        Failure {
            class: e.class(),
            message: e.to_string(),
        }
    }
}

impl Classify for Failure {
    fn class(&self) -> Class {
        self.class
    }
}

/// A classified error as a bus consumer's answer: permanent failures are
/// dead-lettered at once, transient ones redelivered.
pub fn handler_error<E: Classify + fmt::Display>(e: E) -> HandlerError {
    match e.class() {
        Class::Permanent => HandlerError::Permanent(e.to_string()),
        Class::Transient => HandlerError::Transient(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_permanent_and_outages_transient() {
        assert_eq!(tonic::Status::not_found("x").class(), Class::Permanent);
        assert_eq!(
            tonic::Status::invalid_argument("x").class(),
            Class::Permanent
        );
        assert_eq!(
            tonic::Status::permission_denied("x").class(),
            Class::Permanent
        );
        assert_eq!(tonic::Status::unavailable("x").class(), Class::Transient);
        assert_eq!(tonic::Status::internal("x").class(), Class::Transient);
        assert!(sea_orm::DbErr::Custom("busy".into()).is_transient());
        assert!(matches!(
            handler_error(Failure::permanent("bad body")),
            HandlerError::Permanent(m) if m == "bad body"
        ));
        assert_eq!(
            Failure::of(tonic::Status::not_found("x")).class,
            Class::Permanent
        );
    }
}
