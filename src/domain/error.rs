//! Why a domain rule refused a change. The adapters map these to their own errors (a 422 for HTTP).

use super::status::Refusal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The status machine refused the transition.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The change is inconsistent; `field` names the input at fault.
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
}

impl DomainError {
    pub(crate) fn invalid(field: &'static str, message: &'static str) -> Self {
        DomainError::Invalid { field, message }
    }
}
