//! Certificates made at test time: registry-actor's fixtures.

pub use registry_actor::testing::{Pem, TestCa};
