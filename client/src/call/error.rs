//! [`CallError`]: the final code of a failed call, its cause, and every
//! attempt it made.

use std::fmt;
use std::time::Duration;

use tonic::{Code, Status};

use super::messages::Attempt;
use super::status::{pushback, RETRY_PUSHBACK_KEY};

/// Why a call failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Cause {
    /// No node could be picked (none registered, none matching, none left to
    /// try, not discovered in time, bad settings).
    Pick(crate::Error),
    /// The last attempt's status, as the node (or the transport) gave it,
    /// details and metadata included.
    Status(Status),
    /// The call's deadline passed.
    Deadline(Duration),
}

/// A failed call: the final code, its cause and every attempt (node, code,
/// latency).
#[derive(Debug, Clone)]
pub struct CallError {
    code: Code,
    message: String,
    service: String,
    attempts: Vec<Attempt>,
    /// Boxed: a status with its metadata is large, and errors travel in `Result`s.
    cause: Box<Cause>,
    budget_exhausted: bool,
}

impl CallError {
    pub(crate) fn pick(service: &str, error: crate::Error, attempts: Vec<Attempt>) -> Self {
        Self {
            code: error.code(),
            message: error.to_string(),
            service: service.to_owned(),
            attempts,
            cause: Box::new(Cause::Pick(error)),
            budget_exhausted: false,
        }
    }

    pub(crate) fn status(service: &str, status: Status, attempts: Vec<Attempt>) -> Self {
        Self {
            code: status.code(),
            message: status.message().to_owned(),
            service: service.to_owned(),
            attempts,
            cause: Box::new(Cause::Status(status)),
            budget_exhausted: false,
        }
    }

    pub(crate) fn deadline(service: &str, timeout: Duration, attempts: Vec<Attempt>) -> Self {
        Self {
            code: Code::DeadlineExceeded,
            message: format!("deadline of {timeout:?} passed"),
            service: service.to_owned(),
            attempts,
            cause: Box::new(Cause::Deadline(timeout)),
            budget_exhausted: false,
        }
    }

    /// Marks that the retry budget refused an attempt the call wanted.
    pub(crate) fn with_budget_exhausted(mut self, exhausted: bool) -> Self {
        self.budget_exhausted = exhausted;
        self
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

    /// Why the call failed.
    pub fn cause(&self) -> &Cause {
        &self.cause
    }

    /// The last attempt's status, when an attempt ended the call.
    pub fn last_status(&self) -> Option<&Status> {
        match &*self.cause {
            Cause::Status(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the service's retry budget refused an attempt this call wanted
    /// to make (so it ended with the error it had).
    pub fn budget_exhausted(&self) -> bool {
        self.budget_exhausted
    }

    /// The server's pushback on the last attempt, when it asked to wait.
    pub fn pushback(&self) -> Option<Duration> {
        self.last_status().and_then(|s| pushback(s).flatten())
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "call to `{}` failed with {:?}: {}",
            self.service, self.code, self.message
        )?;
        if self.budget_exhausted {
            f.write_str(" (retry budget exhausted)")?;
        }
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

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.cause {
            Cause::Pick(e) => Some(e),
            Cause::Status(s) => Some(s),
            Cause::Deadline(_) => None,
        }
    }
}

impl From<CallError> for Status {
    /// The last attempt's status with its details and metadata (the server's
    /// pushback among them), the message extended with every attempt; or a
    /// status of the final code.
    fn from(e: CallError) -> Self {
        let message = e.to_string();
        match *e.cause {
            Cause::Status(status) => {
                let mut out = Status::with_details_and_metadata(
                    status.code(),
                    message,
                    status.details().to_vec().into(),
                    status.metadata().clone(),
                );
                if let Some(p) = pushback(&status).flatten() {
                    if let Ok(v) = p.as_millis().to_string().parse() {
                        out.metadata_mut().insert(RETRY_PUSHBACK_KEY, v);
                    }
                }
                out
            }
            _ => Status::new(e.code, message),
        }
    }
}
