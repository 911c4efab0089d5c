//! guichet's contracts as Rust types: prost messages, tonic clients and
//! servers for every `proto/guichet/<area>/v1` package, the descriptor set for
//! server reflection, and small conversions shared by every role.

#![allow(clippy::all, missing_docs)]

/// Encoded `FileDescriptorSet` of every guichet proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/guichet_descriptor.bin"));

pub mod intake {
    pub mod v1 {
        tonic::include_proto!("guichet.intake.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("guichet.events.v1");
    }
}
pub mod counter {
    pub mod v1 {
        tonic::include_proto!("guichet.counter.v1");
    }
}
pub mod dossier {
    pub mod v1 {
        tonic::include_proto!("guichet.dossier.v1");
    }
}
pub mod routing {
    pub mod v1 {
        tonic::include_proto!("guichet.routing.v1");
    }
}
pub mod telephony {
    pub mod v1 {
        tonic::include_proto!("guichet.telephony.v1");
    }
}
pub mod scan {
    pub mod v1 {
        tonic::include_proto!("guichet.scan.v1");
    }
}
pub mod appointment {
    pub mod v1 {
        tonic::include_proto!("guichet.appointment.v1");
    }
}
pub mod signature {
    pub mod v1 {
        tonic::include_proto!("guichet.signature.v1");
    }
}
pub mod email {
    pub mod v1 {
        tonic::include_proto!("guichet.email.v1");
    }
}
pub mod notification {
    pub mod v1 {
        tonic::include_proto!("guichet.notification.v1");
    }
}

pub mod indicators {
    pub mod v1 {
        tonic::include_proto!("guichet.indicators.v1");
    }
}

pub mod convert;
