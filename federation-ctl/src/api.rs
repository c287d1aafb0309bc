//! The generated gRPC APIs: [`peering`] between controllers, [`control`] for the CLI.

#![allow(missing_docs, unreachable_pub, unused_qualifications, clippy::all)]

pub mod peering {
    tonic::include_proto!("isthmus.peering.v1");
}

pub mod control {
    tonic::include_proto!("isthmus.control.v1");
}
