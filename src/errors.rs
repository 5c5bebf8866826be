//! The one map from keyward's failures to gRPC statuses, used by the Check service and the
//! admin API alike: a store failure, an undecidable request, an access denial and bad input each
//! become the same [`tonic::Code`] wherever they happen.
//!
//! Messages never carry a secret or a storage detail: the detail of an outage goes to the log
//! at the call site, the caller sees "storage unavailable".

use tonic::{Code, Status};

use crate::authn::Undecidable;
use crate::policy::{AccessDenied, ExpiryRefused};
use crate::store::StoreError;

/// Why keyward could not decide. Envoy answers its `status_on_error` for any of these.
impl From<&Undecidable> for Status {
    fn from(e: &Undecidable) -> Self {
        match e {
            Undecidable::Overloaded | Undecidable::KeyOverloaded(_) => {
                Status::new(Code::ResourceExhausted, "keyward is overloaded")
            }
            Undecidable::PrincipalOverloaded(_) => Status::new(
                Code::ResourceExhausted,
                "too many key writes in flight for this caller; retry when one has finished",
            ),
            Undecidable::Storage(_) => storage_unavailable(),
            Undecidable::Internal(_) => Status::new(Code::Internal, "internal error"),
        }
    }
}

impl From<Undecidable> for Status {
    fn from(e: Undecidable) -> Self {
        Status::from(&e)
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => not_found(what),
            StoreError::Conflict(what) => conflict(what),
            StoreError::Invalid(message) => bad_input(message),
            StoreError::Unavailable(detail) | StoreError::Unreachable(detail) => {
                tracing::warn!(%detail, "storage error");
                storage_unavailable()
            }
        }
    }
}

/// A refused admin call. What the caller may not know exists reads as absent.
///
/// The status carries [`DENIED_MARK`] so the admin layer can audit the denial (a hidden target
/// is a denial too); [`take_denial`] removes it before the caller sees the status, which would
/// otherwise tell "hidden" from "absent".
impl From<AccessDenied> for Status {
    fn from(denied: AccessDenied) -> Self {
        let mut status = match denied {
            AccessDenied::Hidden { .. } => Status::new(Code::NotFound, denied.to_string()),
            _ => permission_denied(denied.to_string()),
        };
        status.metadata_mut().insert(
            DENIED_MARK,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        status
    }
}

/// The metadata key marking a status made from an [`AccessDenied`]; never sent to a caller.
const DENIED_MARK: &str = "x-keyward-access-denied";

/// Whether `status` is an access denial, removing the mark that says so.
pub fn take_denial(status: &mut Status) -> bool {
    status.metadata_mut().remove(DENIED_MARK).is_some()
}

impl From<ExpiryRefused> for Status {
    fn from(refused: ExpiryRefused) -> Self {
        match refused {
            ExpiryRefused::InThePast => bad_input(refused.to_string()),
            ExpiryRefused::Terminal => precondition(refused.to_string()),
        }
    }
}

fn storage_unavailable() -> Status {
    Status::new(Code::Unavailable, "storage unavailable")
}

/// `what` (e.g. "key AAAA") does not exist, or the caller may not know that it does.
pub fn not_found(what: impl std::fmt::Display) -> Status {
    Status::new(Code::NotFound, format!("{what} not found"))
}

pub fn conflict(what: impl std::fmt::Display) -> Status {
    Status::new(Code::AlreadyExists, format!("{what} already exists"))
}

/// A request field is malformed or out of range; the message names it. What protobuf ↔ domain
/// conversions fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl From<BadInput> for Status {
    fn from(e: BadInput) -> Self {
        bad_input(e.0)
    }
}

/// A request field is malformed or out of range; `message` names it.
pub fn bad_input(message: impl Into<String>) -> Status {
    Status::new(Code::InvalidArgument, message)
}

/// The request is well formed but the state it acts on does not allow it.
pub fn precondition(message: impl Into<String>) -> Status {
    Status::new(Code::FailedPrecondition, message)
}

pub fn unauthenticated(message: impl Into<String>) -> Status {
    Status::new(Code::Unauthenticated, message)
}

pub fn permission_denied(message: impl Into<String>) -> Status {
    Status::new(Code::PermissionDenied, message)
}

/// The `google.rpc.Status` code of a Check answer: OK for an allow, the denial's class
/// otherwise (Envoy reads the HTTP status from the response itself).
pub fn check_code(allowed: bool, unauthenticated: bool) -> i32 {
    match (allowed, unauthenticated) {
        (true, _) => Code::Ok as i32,
        (false, true) => Code::Unauthenticated as i32,
        (false, false) => Code::PermissionDenied as i32,
    }
}
