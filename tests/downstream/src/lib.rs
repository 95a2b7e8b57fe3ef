//! Nothing: this crate exists for its tests, which use grpc-cluster as a
//! downstream crate does, through its `testing` feature.
