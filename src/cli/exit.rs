//! Exit codes: every failure of every command maps, in [`kind_of`], to one [`Kind`] and its
//! documented exit code, so a script can tell "not found" from "permission denied" from "server
//! unreachable". The same code is returned with `--output table` and `--output json`; with
//! `--output json` the error itself is one JSON object on stderr.

use std::process::ExitCode;

use serde_json::json;

use crate::config::ConfigError;
use crate::store::StoreError;

/// What went wrong, as far as a script needs to know. The discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything not classified below: an internal error, a bug.
    Error = 1,
    /// A bad flag, argument or input: from the command line, or refused by the server as
    /// malformed (gRPC `INVALID_ARGUMENT`, `OUT_OF_RANGE`). Retrying the same command fails again.
    Usage = 2,
    /// What the command names does not exist, or the caller may not know it does (`NOT_FOUND`).
    NotFound = 3,
    /// No control token, a malformed one, or one the server refused (`UNAUTHENTICATED`).
    Unauthenticated = 4,
    /// The token is valid but its bearer may not do this (`PERMISSION_DENIED`).
    PermissionDenied = 5,
    /// The state does not allow it: it already exists, or is in the wrong state
    /// (`ALREADY_EXISTS`, `FAILED_PRECONDITION`, `ABORTED`).
    Conflict = 6,
    /// Try again later: the server cannot be reached, its storage is down or it is overloaded
    /// (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`).
    Unavailable = 7,
    /// The configuration (file or `KEYWARD_*` variables) is invalid.
    Config = 8,
}

/// The exit code of a closed standard output (`keyward keys list | head -1`): the shell's
/// own for SIGPIPE.
pub const BROKEN_PIPE: u8 = 141;

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Error,
        Kind::Usage,
        Kind::NotFound,
        Kind::Unauthenticated,
        Kind::PermissionDenied,
        Kind::Conflict,
        Kind::Unavailable,
        Kind::Config,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name in JSON errors (`"kind": "not_found"`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Usage => "usage",
            Kind::NotFound => "not_found",
            Kind::Unauthenticated => "unauthenticated",
            Kind::PermissionDenied => "permission_denied",
            Kind::Conflict => "conflict",
            Kind::Unavailable => "unavailable",
            Kind::Config => "config",
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Kind::Error => "internal or unclassified error",
            Kind::Usage => "bad flag, argument or input (the server's INVALID_ARGUMENT too)",
            Kind::NotFound => "not found (or not visible to this token)",
            Kind::Unauthenticated => "no control token, a malformed one, or one refused",
            Kind::PermissionDenied => "permission denied",
            Kind::Conflict => "conflict: already exists, or the state does not allow it",
            Kind::Unavailable => {
                "unavailable: server unreachable, storage down, overloaded (retry)"
            }
            Kind::Config => "invalid configuration (file or KEYWARD_* variable)",
        }
    }

    pub fn from_grpc(code: tonic::Code) -> Kind {
        use tonic::Code as C;
        match code {
            C::InvalidArgument | C::OutOfRange => Kind::Usage,
            C::NotFound => Kind::NotFound,
            C::Unauthenticated => Kind::Unauthenticated,
            C::PermissionDenied => Kind::PermissionDenied,
            C::AlreadyExists | C::FailedPrecondition | C::Aborted => Kind::Conflict,
            C::Unavailable | C::DeadlineExceeded | C::ResourceExhausted => Kind::Unavailable,
            C::Ok | C::Cancelled | C::Unknown | C::Unimplemented | C::Internal | C::DataLoss => {
                Kind::Error
            }
        }
    }
}

/// The exit-code table, as `keyward help exit-codes`, `--help` and the man page print it.
pub fn table() -> String {
    let mut out = String::from("Exit codes (the same with --output table and --output json):\n");
    out.push_str("  0    success\n");
    for kind in Kind::ALL {
        out.push_str(&format!(
            "  {:<4} {:<18} {}\n",
            kind.code(),
            kind.name(),
            kind.meaning()
        ));
    }
    out.push_str(&format!(
        "  {BROKEN_PIPE:<4} {:<18} standard output was closed (`keyward keys list | head -1`)\n",
        "broken_pipe"
    ));
    out
}

/// A failure the CLI classifies itself (a bad flag value found after parsing, no token, …).
/// Its message is shown as it is.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(Kind::Usage, message)
    }
}

/// The admin API's answer to a failed call: its message shown, its code kept for the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.message())]
pub struct Refused(pub tonic::Status);

/// The kind of the first classifiable error in the chain, outermost first; [`Kind::Error`]
/// when none is.
pub fn kind_of(error: &anyhow::Error) -> Kind {
    error
        .chain()
        .find_map(|cause| {
            if let Some(f) = cause.downcast_ref::<Failure>() {
                return Some(f.kind);
            }
            if let Some(Refused(status)) = cause.downcast_ref::<Refused>() {
                return Some(Kind::from_grpc(status.code()));
            }
            if let Some(status) = cause.downcast_ref::<tonic::Status>() {
                return Some(Kind::from_grpc(status.code()));
            }
            if cause.downcast_ref::<ConfigError>().is_some() {
                return Some(Kind::Config);
            }
            if cause.downcast_ref::<tonic::transport::Error>().is_some() {
                return Some(Kind::Unavailable);
            }
            if let Some(e) = cause.downcast_ref::<StoreError>() {
                return Some(match e {
                    StoreError::NotFound(_) => Kind::NotFound,
                    StoreError::Conflict(_) => Kind::Conflict,
                    StoreError::Invalid(_) => Kind::Usage,
                    StoreError::Unavailable(_) | StoreError::Unreachable(_) => Kind::Unavailable,
                });
            }
            None
        })
        .unwrap_or(Kind::Error)
}

/// Prints `error` on stderr (one line, or one JSON object when `json`) and returns its exit code.
pub fn report(error: &anyhow::Error, json: bool) -> ExitCode {
    let kind = kind_of(error);
    if json {
        let grpc = error
            .chain()
            .find_map(|c| c.downcast_ref::<Refused>().map(|r| r.0.code()))
            .map(|code| format!("{code:?}"));
        eprintln!(
            "{}",
            json!({"error": {
                "kind": kind.name(),
                "exit_code": kind.code(),
                "message": format!("{error:#}"),
                "grpc_code": grpc,
            }})
        );
    } else {
        eprintln!("error: {error:#}");
    }
    ExitCode::from(kind.code())
}

/// A command line clap refused (exit 2), or `--help` / `--version` (exit 0).
pub fn report_parse_error(error: &clap::Error, json: bool) -> ExitCode {
    let code = error.exit_code();
    if json && code != 0 {
        let rendered = error.render().to_string();
        let message = rendered
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        eprintln!(
            "{}",
            json!({"error": {
                "kind": Kind::Usage.name(),
                "exit_code": Kind::Usage.code(),
                "message": message,
                "grpc_code": null,
            }})
        );
        return ExitCode::from(Kind::Usage.code());
    }
    // clap prints help and version on stdout and errors on stderr itself.
    let _ = error.print();
    ExitCode::from(u8::try_from(code).unwrap_or(Kind::Usage.code()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn codes_are_distinct_and_match_the_grpc_codes() {
        let mut codes: Vec<u8> = Kind::ALL.iter().map(|k| k.code()).collect();
        codes.push(0);
        codes.push(BROKEN_PIPE);
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n);
        assert_eq!(Kind::Usage.code(), 2, "clap's own usage code");
        for (code, kind) in [
            (tonic::Code::NotFound, Kind::NotFound),
            (tonic::Code::PermissionDenied, Kind::PermissionDenied),
            (tonic::Code::Unauthenticated, Kind::Unauthenticated),
            (tonic::Code::AlreadyExists, Kind::Conflict),
            (tonic::Code::FailedPrecondition, Kind::Conflict),
            (tonic::Code::InvalidArgument, Kind::Usage),
            (tonic::Code::Unavailable, Kind::Unavailable),
            (tonic::Code::ResourceExhausted, Kind::Unavailable),
            (tonic::Code::Internal, Kind::Error),
        ] {
            assert_eq!(Kind::from_grpc(code), kind, "{code:?}");
        }
    }

    #[test]
    fn the_kind_is_found_under_context() {
        let refused: anyhow::Error = Refused(tonic::Status::not_found("key x not found")).into();
        let wrapped = Err::<(), _>(refused).context("apply.toml").unwrap_err();
        assert_eq!(kind_of(&wrapped), Kind::NotFound);
        assert_eq!(format!("{wrapped:#}"), "apply.toml: key x not found");
        let usage: anyhow::Error = Failure::usage("nothing to change").into();
        assert_eq!(kind_of(&usage), Kind::Usage);
        assert_eq!(kind_of(&anyhow::anyhow!("mystery")), Kind::Error);
        let config: anyhow::Error = ConfigError::Invalid("cache.capacity".into()).into();
        assert_eq!(kind_of(&config), Kind::Config);
    }

    #[test]
    fn the_table_lists_every_code() {
        let table = table();
        for kind in Kind::ALL {
            assert!(table.contains(kind.name()), "{table}");
        }
        assert!(table.contains("141"));
    }
}
