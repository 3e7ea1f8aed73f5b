use taskwarden_core::TransitionError;
use thiserror::Error;

/// A storage error, the same on every backend: callers match on the variant, never on a driver's
/// message.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The caller's lease is no longer the task's current lease.
    #[error("the lease is no longer held (expired or replaced by a newer attempt)")]
    LeaseLost,
    /// The task's state does not allow the change.
    #[error(transparent)]
    Transition(TransitionError),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or is shutting down; the call may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Internal(String),
}

impl From<TransitionError> for StoreError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::LeaseLost => StoreError::LeaseLost,
            other => StoreError::Transition(other),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
