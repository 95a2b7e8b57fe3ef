//! [`CallError`]: the final code of a failed call and every attempt it made.

use std::fmt;

use tonic::{Code, Status};

use super::messages::Attempt;

/// A failed call: the final status and every attempt (node, code, latency).
#[derive(Debug, Clone)]
pub struct CallError {
    code: Code,
    message: String,
    service: String,
    attempts: Vec<Attempt>,
    pushback: Option<std::time::Duration>,
}

impl CallError {
    pub(crate) fn new(
        service: &str,
        code: Code,
        message: impl Into<String>,
        attempts: Vec<Attempt>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            service: service.to_owned(),
            attempts,
            pushback: None,
        }
    }

    pub(crate) fn from_status(service: &str, status: &Status, attempts: Vec<Attempt>) -> Self {
        let mut e = Self::new(service, status.code(), status.message(), attempts);
        e.pushback = super::strategy::pushback(status).flatten();
        e
    }

    /// The final gRPC code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The final message (the server's, or ours when no node was reached).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The service called.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Every attempt made, in order; empty when no node could be picked.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "call to `{}` failed with {:?}: {}",
            self.service, self.code, self.message
        )?;
        if !self.attempts.is_empty() {
            f.write_str(" (attempts: ")?;
            for (i, a) in self.attempts.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for CallError {}

impl From<CallError> for Status {
    fn from(e: CallError) -> Self {
        let mut status = Status::new(e.code, e.to_string());
        if let Some(p) = e.pushback {
            if let Ok(v) = p.as_millis().to_string().parse() {
                status.metadata_mut().insert("grpc-retry-pushback-ms", v);
            }
        }
        status
    }
}
