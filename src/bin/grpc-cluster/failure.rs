//! Why a command failed: one message naming the culprit.

use std::fmt;

/// A failed command. Its message is printed on stderr.
#[derive(Debug)]
pub(crate) struct Failure(String);

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<grpc_cluster::config::ConfigError> for Failure {
    fn from(e: grpc_cluster::config::ConfigError) -> Self {
        Self(e.to_string())
    }
}

impl From<registry_actor::Error> for Failure {
    fn from(e: registry_actor::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<registry_actor::DecodeError> for Failure {
    fn from(e: registry_actor::DecodeError) -> Self {
        Self(e.to_string())
    }
}
