//! Test support shared by the integration tests.
#![allow(dead_code)]

pub mod bus;
pub mod cluster;
pub mod msgpack;
pub mod nats;
pub mod rng;
pub mod scenario;
pub mod streams;
