//! Why a telephony operation did not happen: the platform's domain error, mapped
//! to a gRPC status in one place (`guichet_platform::domain_error`).

pub use guichet_platform::domain_error::*;
