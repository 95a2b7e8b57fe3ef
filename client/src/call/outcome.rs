//! The final codes of what calls answer, for their observation.

use tonic::{Code, Status};

use super::error::CallError;
use super::messages::{BroadcastReply, Reply};
use crate::observe::Outcome;

impl<T> Outcome for Reply<T> {
    fn code(&self) -> Code {
        Code::Ok
    }
}

impl<T> Outcome for BroadcastReply<T> {
    /// `OK` when complete; else the first failing node's code, or
    /// `DEADLINE_EXCEEDED` when none failed (the deadline ended it).
    fn code(&self) -> Code {
        if self.complete {
            return Code::Ok;
        }
        self.nodes
            .iter()
            .find_map(|n| n.result.as_ref().err().map(Status::code))
            .unwrap_or(Code::DeadlineExceeded)
    }
}

impl Outcome for CallError {
    fn code(&self) -> Code {
        CallError::code(self)
    }
}
