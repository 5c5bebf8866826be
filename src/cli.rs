//! The `keyward` command line. `serve` runs the server and `init` works on the database
//! directly; every other command calls the admin API of a running server with a control token.
//! Tables for people, `--output json` for scripts; failures print one line (one JSON object
//! with `--output json`) and exit with the code of their kind (`keyward help exit-codes`).

pub mod exit;
mod help;
mod table;

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::admin::{rule_summary, set_condition_args};
use crate::clock::now_unix;
use crate::condition::ConditionArgs;
use crate::config::Config;
use crate::iam::PrincipalRef;
use crate::model::{KeyScope, Plane, PrincipalKind};
use crate::pb::admin_client::AdminClient;
use crate::pb::{self, expiry};
use crate::token;
use exit::{Failure, Kind, Refused};

/// Every line the CLI prints goes through here: a closed stdout (`keyward keys list | head -1`)
/// ends the process quietly with the shell's SIGPIPE status, 141, instead of panicking.
macro_rules! println {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))
    };
}

fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to standard output: {error}");
        }
        std::process::exit(141);
    }
}

/// Shown under `keyward --help`.
const TOP_AFTER_HELP: &str = "\
Get started:
  keyward init --database sqlite://keyward.db     # prints the owner's control token once
  keyward serve --config examples/keyward.toml
  export KEYWARD_TOKEN_FILE=~/.config/keyward/token   # or KEYWARD_TOKEN; `-` reads stdin
  keyward projects create acme
  keyward deployments create acme/chat --model llama-3-70b
  keyward keys create --plane data --scope acme/chat --name ci

More: keyward help COMMAND…, keyward help exit-codes|environment|config, keyward man,
keyward completions bash|zsh|fish. Exit status: 0 ok, 2 usage, 3 not found, 4 unauthenticated,
5 permission denied, 6 conflict, 7 unavailable (retry), 8 bad configuration, 1 anything else.";

#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about = "Envoy ext_authz server for inference API keys",
    after_help = TOP_AFTER_HELP,
    disable_help_subcommand = true,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Check, admin and health servers.
    #[command(after_help = "Examples:
  keyward serve --config /etc/keyward/keyward.toml
  KEYWARD_DATABASE_URL=postgres://keyward@db/keyward KEYWARD_CHECK_ADDR=0.0.0.0:9191 keyward serve
Check the configuration first: keyward config check FILE")]
    Serve {
        /// TOML configuration file; KEYWARD_* variables override it.
        #[arg(long, env = "KEYWARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create the schema, the default organization and its owner; print the owner's
    /// organization-wide control token once.
    Init {
        /// Database URL (default: the configuration's, `sqlite://keyward.db`).
        #[arg(long)]
        database: Option<String>,
        /// TOML configuration file (for the database and argon2 settings).
        #[arg(long, env = "KEYWARD_CONFIG")]
        config: Option<PathBuf>,
        /// The owner's name or email.
        #[arg(long, default_value = "owner")]
        owner: String,
        /// On an initialized database: mint another organization-wide control key for the
        /// owner (lost, revoked or deleted keys), print it once and log its id.
        #[arg(long, conflicts_with = "owner")]
        recover: bool,
        /// `table` for people, `json` for scripts (errors too, on stderr).
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Projects: isolation boundaries holding deployments.
    Projects {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: ProjectsCommand,
    },
    /// Deployments and their per-endpoint authentication.
    Deployments {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: DeploymentsCommand,
    },
    /// API keys.
    Keys {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Members: human users of the organization, by email.
    Members {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Applications: non-human identities, by name.
    Apps {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Permission sets: built-in and custom named sets of actions.
    PermissionSets {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: SetsCommand,
    },
    /// Policies: rules attached to one member or application.
    Policies {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: PoliciesCommand,
    },
    /// Workload ids, so `/api/workloads/:id` control routes resolve their project (ids are
    /// unique per project; a request resolves within its key's own project).
    Workloads {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: WorkloadsCommand,
    },
    /// The route table: which deployment or control project a request is for, by host and
    /// path prefix, when Envoy sends no context extensions (Istio; docs/routes.md).
    Routes {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: RoutesCommand,
    },
    /// Create or update projects, deployments, workloads, members, applications, permission
    /// sets, policies and routes from a TOML file (docs/iam.md), all or nothing.
    Apply {
        #[command(flatten)]
        remote: Remote,
        /// The TOML file (`-` for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Print the changes (+ create, ~ update, - remove) without making them.
        #[arg(long)]
        dry_run: bool,
        /// Also remove members, applications, custom permission sets, policies, workloads and
        /// routes absent from the file.
        #[arg(long)]
        prune: bool,
    },
    /// Print the current state in the `apply` format. Never contains a secret.
    #[command(
        after_help = "Example:\n  keyward export > keyward-state.toml && keyward apply -f keyward-state.toml --dry-run"
    )]
    Export {
        #[command(flatten)]
        remote: Remote,
    },
    /// The configuration: `keyward config check [FILE]`.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print shell completions: `source <(keyward completions bash)`.
    #[command(after_help = "Install:
  bash: keyward completions bash > /etc/bash_completion.d/keyward   (or source <(keyward completions bash))
  zsh:  keyward completions zsh > \"${fpath[1]}/_keyward\"
  fish: keyward completions fish > ~/.config/fish/completions/keyward.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `keyward man | man -l -`.
    Man,
    /// Help on a command (`keyward help keys create`) or a topic: exit-codes, environment,
    /// config.
    Help {
        /// A command path or a topic; none: the overview.
        #[arg(value_name = "COMMAND|TOPIC")]
        topic: Vec<String>,
    },
    /// The audit log: every admin write and every denied admin call (needs audit.read).
    Audit {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// How Check decides a request, and why: the key's validity and scope, each policy and
    /// rule considered, which one granted the action or which condition failed. Runs the very
    /// decision Check runs, on the server's current state. Needs iam.read on the organization.
    #[command(after_help = "Examples:
  keyward explain --key KEYID --deployment acme/chat --source-ip 10.1.2.3 --user-agent curl/8.5.0
  keyward explain --principal app:ci --path /api/projects/acme/workloads --method POST \\
      --at 2030-03-30T10:00:00Z
  keyward explain --key KEYID --deployment acme/chat --endpoint private --output json")]
    Explain {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        request: ExplainArgs,
    },
}

/// The request `keyward explain` asks about.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Whose request: this key (its secret taken as presented).
    #[arg(
        long = "key",
        required_unless_present = "principal",
        conflicts_with = "principal"
    )]
    key_id: Option<String>,
    /// Whose request: this principal (owner, user:EMAIL, app:NAME), with a key scoped to
    /// exactly the target, so only its policies decide.
    #[arg(long)]
    principal: Option<String>,
    /// The endpoint the request arrives on.
    #[arg(long, value_parser = ["public", "private"], default_value = "public")]
    endpoint: String,
    /// A data route (inference) to this deployment, PROJECT/SLUG.
    #[arg(long, required_unless_present_any = ["path", "project"], conflicts_with_all = ["path", "project"])]
    deployment: Option<String>,
    /// A control route: its path, e.g. /api/projects/acme/workloads or /api/workloads/ID.
    #[arg(long, conflicts_with = "project")]
    path: Option<String>,
    /// A control route pinned to this project (Envoy's `project` context extension).
    #[arg(long)]
    project: Option<String>,
    /// The HTTP method (default: POST on data routes, GET on control routes).
    #[arg(long)]
    method: Option<String>,
    /// The peer address Envoy would report.
    #[arg(long)]
    source_ip: Option<String>,
    /// The User-Agent header.
    #[arg(long)]
    user_agent: Option<String>,
    /// The instant to decide at, RFC 3339 (default: now).
    #[arg(long)]
    at: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and the KEYWARD_* environment as `serve` would read them;
    /// print the effective values (secrets redacted) and where each came from; name every bad
    /// value. Exit 8 when any is bad.
    #[command(after_help = "Examples:
  keyward config check examples/keyward.toml
  KEYWARD_CACHE_TTL_SECS=10m keyward config check /etc/keyward/keyward.toml --output json")]
    Check {
        /// The TOML file; none: the defaults and the environment only.
        #[arg(env = "KEYWARD_CONFIG")]
        file: Option<PathBuf>,
        /// `table` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit records, oldest first; `--output json` prints one JSON object a line (for a SIEM).
    List {
        /// Records at or after this time: YYYY-MM-DD, an RFC 3339 instant, or a duration ago
        /// (`90m`, `24h`, `7d`).
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        /// Only this principal's calls: `owner`, `user:EMAIL` or `app:NAME`.
        #[arg(long)]
        principal: Option<String>,
        /// Only records whose target contains this text (`acme/bot`, `key:ID`).
        #[arg(long)]
        target: Option<String>,
        /// Only this admin call (`create_key`, `revoke_key`, `put_policy`, …).
        #[arg(long)]
        action: Option<String>,
        /// At most this many records (one page, at most 1000); the next page's token goes to
        /// stderr.
        #[arg(long)]
        limit: Option<u32>,
        /// The records after the page that printed this token.
        #[arg(long)]
        page_token: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Add a member by email.
    Add {
        /// The member's email.
        email: String,
    },
    /// List members with their key counts.
    List,
    /// Remove a member: its keys are deleted at once, its policies detached.
    Remove {
        /// The member's email.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an application (a CI job, a service) that can bear keys.
    Create {
        /// The application's name.
        name: String,
    },
    /// List applications with their key counts.
    List,
    /// Remove an application: its keys are deleted at once, its policies detached.
    Remove {
        /// The application's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SetsCommand {
    /// List the built-in and custom permission sets.
    List,
    /// Create or replace a custom permission set.
    #[command(
        after_help = "Example:\n  keyward permission-sets put ChatOnly --actions inference.chat --includes InferenceReadOnly"
    )]
    Put {
        /// The set's name.
        name: String,
        /// Actions it grants (comma separated).
        #[arg(long, value_delimiter = ',')]
        actions: Vec<String>,
        /// Other sets whose actions it includes (comma separated).
        #[arg(long, value_delimiter = ',')]
        includes: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a custom permission set.
    Delete {
        /// The set's name.
        name: String,
    },
}

/// One rule, from flags.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Scope: these projects (comma separated).
    #[arg(long, value_delimiter = ',')]
    projects: Vec<String>,
    /// Scope: every project, current and future.
    #[arg(long)]
    all_projects: bool,
    /// Scope: organization features (iam.manage, projects.write).
    #[arg(long)]
    organization: bool,
    /// Permission sets (comma separated), e.g. InferenceReadOnly.
    #[arg(long, value_delimiter = ',', required = true)]
    sets: Vec<String>,
    #[command(flatten)]
    conditions: ConditionArgs,
}

#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// List policies and their rules.
    List {
        /// Only policies attached to this principal (user:EMAIL or app:NAME).
        #[arg(long)]
        principal: Option<String>,
    },
    /// Show one policy and its rules.
    Show {
        /// The policy's name.
        name: String,
    },
    /// Create (or replace) a policy with one rule.
    #[command(after_help = "Example:
  keyward policies create ci-chat --principal app:ci --projects acme --sets InferenceReadOnly \\
    --ip 10.0.0.0/8 --not-after 2030-01-01T00:00:00Z")]
    Create {
        /// The policy's name.
        name: String,
        /// user:EMAIL or app:NAME; omitted: detached.
        #[arg(long)]
        principal: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Append a rule to a policy.
    AddRule {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Attach a policy to a principal (user:EMAIL or app:NAME).
    Attach {
        /// The policy's name.
        name: String,
        /// user:EMAIL or app:NAME.
        #[arg(long)]
        to: String,
    },
    /// Detach a policy from its principal (it is kept, granting nothing).
    Detach {
        /// The policy's name.
        name: String,
    },
    /// Delete a policy.
    Delete {
        /// The policy's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkloadsCommand {
    /// Register a workload id under a project.
    #[command(after_help = "Example:\n  keyward workloads register wl-7f3a --project acme")]
    Register {
        /// The workload id, as it appears in `/api/workloads/:id`.
        id: String,
        /// The project it belongs to.
        #[arg(long)]
        project: String,
    },
    /// List workload ids.
    List {
        /// Only this project's.
        #[arg(long)]
        project: Option<String>,
    },
    /// Delete a workload id.
    Delete {
        /// The workload id.
        id: String,
        /// The project whose workload this is (ids are unique per project only); needed when
        /// the id is registered in several projects you can see.
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Add an entry: a data route names a deployment; a control route names its project or
    /// takes it from the path. Effective on the next request (other replicas: ≤ 100 ms).
    #[command(after_help = "Examples:
  keyward routes add --host 'api.example.com' --prefix /v1/chat --deployment acme/chat --endpoint public
  keyward routes add --host 'private.example.net' --prefix /acme/chat --deployment acme/chat --endpoint private
  keyward routes add --host '*.example.com' --prefix /api/projects/acme --control-project acme
  keyward routes add --host '*' --prefix /api --control

Most specific first: exact host, then *.suffix (longest first), then *; within a host the
longest prefix. Context extensions from Envoy, when sent, always win over the table.")]
    Add {
        /// `*` (any host), `*.example.com` (any subdomain) or an exact host, without a port.
        #[arg(long)]
        host: String,
        /// Path prefix in whole segments: `/acme/chat` matches `/acme/chat/v1/...`, not
        /// `/acme/chatty`.
        #[arg(long)]
        prefix: String,
        /// Data route to this deployment, `PROJECT/SLUG`.
        #[arg(long, conflicts_with_all = ["control_project", "control"], required_unless_present_any = ["control_project", "control"])]
        deployment: Option<String>,
        /// Control route pinned to this project.
        #[arg(long, conflicts_with = "control")]
        control_project: Option<String>,
        /// Control route taking its project from the path (`/api/projects/:project/...`,
        /// `/api/workloads/:id/...`).
        #[arg(long)]
        control: bool,
        /// The endpoint requests on this route use: `public` or `private`.
        #[arg(long, value_parser = ["public", "private"], default_value = "public")]
        endpoint: String,
        /// Overwrite the entry with the same host and prefix instead of refusing.
        #[arg(long)]
        replace: bool,
    },
    /// List the entries, by host then prefix.
    List,
    /// Remove the entry with this host and prefix.
    #[command(
        after_help = "Example:\n  keyward routes remove --host 'api.example.com' --prefix /v1/chat"
    )]
    Remove {
        /// The entry's host, as it was added.
        #[arg(long)]
        host: String,
        /// The entry's path prefix, as it was added.
        #[arg(long)]
        prefix: String,
    },
}

/// How to reach and authenticate to a running keyward.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct Remote {
    /// Admin API address: http://HOST:PORT, or https://HOST:PORT for an admin API with TLS
    /// (`https://` is TLS or an error, never plaintext).
    #[arg(
        long,
        global = true,
        env = "KEYWARD_SERVER",
        default_value = "http://127.0.0.1:9192"
    )]
    server: String,
    /// CA certificate (PEM) to trust for an https:// admin API, instead of the system's roots.
    #[arg(long, global = true, env = "KEYWARD_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for an admin API that requires one (mutual TLS).
    #[arg(
        long,
        global = true,
        env = "KEYWARD_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "KEYWARD_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Control-plane token (ik_sdk_…). Visible in the process list: prefer --token-file or the
    /// KEYWARD_TOKEN variable.
    #[arg(long, global = true, env = "KEYWARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the control token from this file, or from standard input with `-` (first line;
    /// surrounding whitespace ignored). Wins over --token and KEYWARD_TOKEN.
    #[arg(long, global = true, env = "KEYWARD_TOKEN_FILE", value_name = "PATH|-")]
    token_file: Option<PathBuf>,
    /// `table` for people, `json` for scripts (errors too: one JSON object on stderr).
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project.
    #[command(after_help = "Example:\n  keyward projects create acme")]
    Create {
        /// Lower-case letters, digits and dashes.
        slug: String,
    },
    /// List projects.
    List,
    /// Change a project's description.
    #[command(
        after_help = "Example:\n  keyward projects update acme --description \"Acme's chat products\""
    )]
    Update {
        /// The project's slug.
        slug: String,
        /// The new description (printable, bounded like names).
        #[arg(long)]
        description: String,
    },
    /// Delete a project. Refused while anything refers to it (deployments, workloads, keys,
    /// route entries, policy rules): the error lists them; delete or change those first.
    Delete {
        /// The project's slug.
        slug: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// Register a deployment: `PROJECT/SLUG`.
    #[command(
        after_help = "Example:\n  keyward deployments create acme/chat --model llama-3-70b --private-auth off"
    )]
    Create {
        /// `PROJECT/SLUG`.
        name: String,
        /// The model it serves (free text, shown in lists).
        #[arg(long)]
        model: String,
        /// API keys required on the public endpoint: on or off.
        #[arg(long, value_parser = on_off, default_value = "on", action = clap::ArgAction::Set)]
        public_auth: bool,
        /// API keys required on the private endpoint: on or off.
        #[arg(long, value_parser = on_off, default_value = "on", action = clap::ArgAction::Set)]
        private_auth: bool,
    },
    /// List deployments.
    List {
        /// Only this project's.
        #[arg(long)]
        project: Option<String>,
    },
    /// Switch API-key authentication on or off per endpoint, effective on the next request.
    #[command(
        after_help = "Example:\n  keyward deployments set-auth acme/chat --public on --private off"
    )]
    SetAuth {
        /// `PROJECT/SLUG`.
        name: String,
        /// The public endpoint: on or off.
        #[arg(long, value_parser = on_off)]
        public: Option<bool>,
        /// The private endpoint: on or off.
        #[arg(long, value_parser = on_off)]
        private: Option<bool>,
    },
    /// Change a deployment's model and/or description.
    #[command(
        after_help = "Example:\n  keyward deployments update acme/chat --model llama-3.1-70b"
    )]
    Update {
        /// `PROJECT/SLUG`.
        name: String,
        /// The model it serves (shown to callers as the deployment's model).
        #[arg(long)]
        model: Option<String>,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove (off) or restore (on) a deployment's public endpoint, effective on the next
    /// request on every replica. Off: the public listener answers 404 for it exactly as for a
    /// deployment that is not there, asking no key; the private listener keeps working.
    /// (Not `set-auth --public off`, which keeps the endpoint and drops its key check.)
    #[command(after_help = "Examples:
  keyward deployments public-endpoint acme/chat off   # private network only
  keyward deployments public-endpoint acme/chat on")]
    PublicEndpoint {
        /// `PROJECT/SLUG`.
        name: String,
        /// `off` (private only) or `on`.
        #[arg(value_parser = on_off, action = clap::ArgAction::Set)]
        state: bool,
    },
    /// Delete a deployment. Keys attached to it lose that attachment at once (requests are
    /// denied on the next request, on every replica); `PROJECT/*` keys keep their other
    /// deployments. Refused while a route table entry names it.
    Delete {
        /// `PROJECT/SLUG`.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token once.
    #[command(after_help = "Examples:
  keyward keys create --plane data --scope acme/chat acme/embed --name ci --expires 2030-01-01
  keyward keys create --plane data --scope 'acme/*' --bearer app:ci
  keyward keys create --plane control --scope acme --output json | jq -r .token > ci.token")]
    Create {
        /// `data` (calls deployments) or `control` (calls the admin API).
        #[arg(long, value_parser = parse_plane)]
        plane: Plane,
        /// Data keys: one or more PROJECT/SLUG or PROJECT/*; control keys: one PROJECT.
        #[arg(long, num_args = 1.., required = true)]
        scope: Vec<String>,
        /// A name to recognize it by (not unique).
        #[arg(long, default_value = "")]
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// YYYY-MM-DD (00:00 UTC that day), RFC 3339, or never.
        #[arg(long, value_parser = parse_expiry, default_value = "never")]
        expires: Expiry,
        /// Who bears the key: app:NAME or user:EMAIL (default: the caller).
        #[arg(long)]
        bearer: Option<String>,
    },
    /// List keys, newest first: all of them, or one page with --limit / --page-token.
    List {
        /// Only keys scoped to this project.
        #[arg(long)]
        project: Option<String>,
        /// One page of at most this many keys (at most 1000); the next page's token goes to
        /// stderr.
        #[arg(long)]
        limit: Option<u32>,
        /// The page after the one that printed this token.
        #[arg(long)]
        page_token: Option<String>,
        /// Only data keys that reach this deployment (PROJECT/SLUG), attached to it or to
        /// PROJECT/*.
        #[arg(long)]
        deployment: Option<String>,
        /// Only active keys expiring within this duration (`7d`, `12h`).
        #[arg(long, value_name = "WITHIN", value_parser = parse_duration)]
        expiring: Option<u64>,
        /// Only active keys neither used nor created for this duration (`30d`), by last use on
        /// any replica (written every usage.flush_interval_secs).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        unused_for: Option<u64>,
    },
    /// Show one key (never its secret).
    Show {
        /// The key id (the part of the token after the prefix).
        id: String,
    },
    /// Change a key's name, description, scope or expiry, effective on the next request.
    #[command(
        after_help = "Example:\n  keyward keys update 3kTMd9Qx2bLp --attach acme/embed --expires 2031-01-01"
    )]
    Update {
        /// The key id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Add a scope entry, PROJECT/SLUG or PROJECT/* (repeatable).
        #[arg(long)]
        attach: Vec<String>,
        /// Remove a scope entry (repeatable).
        #[arg(long)]
        detach: Vec<String>,
        /// New expiry: YYYY-MM-DD, RFC 3339, or never.
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<Expiry>,
    },
    /// Give a key a new secret (same id, scope, bearer, name and expiry); print it once.
    #[command(after_help = "Example:\n  keyward keys rotate 3kTMd9Qx2bLp --grace 1h")]
    Rotate {
        /// The key id.
        id: String,
        /// How long the old secret keeps working: 0 (default: at once), or e.g. 30s, 15m, 2h,
        /// 7d, 1h 30m (at most 30 days).
        #[arg(long, value_parser = parse_grace, default_value = "0")]
        grace: u64,
    },
    /// Revoke a key: every later request with it is denied.
    Revoke {
        /// The key id.
        id: String,
    },
    /// Delete a key: like revoke, and it no longer appears in lists.
    Delete {
        /// The key id.
        id: String,
    },
}

/// A parsed `--expires` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    At(i64),
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

fn parse_plane(s: &str) -> Result<Plane, String> {
    s.parse()
}

/// `never`, `YYYY-MM-DD` (00:00 UTC that day, as Gcore defines it) or an RFC 3339 instant.
pub fn parse_expiry(s: &str) -> Result<Expiry, String> {
    if s == "never" {
        return Ok(Expiry::Never);
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(s, &day) {
        return Ok(Expiry::At(date.midnight().assume_utc().unix_timestamp()));
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| Expiry::At(t.unix_timestamp()))
        .map_err(|_| format!("invalid expiry {s:?}: use YYYY-MM-DD, an RFC 3339 time, or never"))
}

/// A grace period in whole seconds: `0`, or a duration with units (`45s`, `15m`, `1h 30m`,
/// `7d`, parsed by humantime), at most 30 days.
pub fn parse_grace(s: &str) -> Result<u64, String> {
    let bad = |why: String| {
        format!("invalid grace {s:?}: {why} (use 0, or e.g. 30s, 15m, 2h, 7d; at most 30d)")
    };
    if s == "0" {
        return Ok(0);
    }
    let grace = humantime::parse_duration(s).map_err(|e| bad(e.to_string()))?;
    if grace.subsec_nanos() != 0 {
        return Err(bad("not a whole number of seconds".into()));
    }
    if grace.as_secs() > 30 * 86_400 {
        return Err(bad("longer than 30 days".into()));
    }
    Ok(grace.as_secs())
}

fn expiry_pb(expiry: Expiry) -> pb::Expiry {
    pb::Expiry {
        kind: Some(match expiry {
            Expiry::Never => expiry::Kind::Never(true),
            Expiry::At(at) => expiry::Kind::At(at),
        }),
    }
}

/// Runs one command; `Err` is printed as one line by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            let listeners = crate::server::Listeners::bind(&config).await?;
            crate::server::run(config, listeners, crate::server::shutdown_signal()).await
        }
        Command::Init {
            database,
            config,
            owner,
            recover,
            output,
        } => {
            init(
                config,
                database,
                (!recover).then_some(owner.as_str()),
                output,
            )
            .await
        }
        Command::Projects { remote, command } => projects(remote, command).await,
        Command::Deployments { remote, command } => deployments(remote, command).await,
        Command::Keys { remote, command } => keys(remote, command).await,
        Command::Members { remote, command } => {
            principals(remote, PrincipalKind::Member, command.into()).await
        }
        Command::Apps { remote, command } => {
            principals(remote, PrincipalKind::Application, command.into()).await
        }
        Command::PermissionSets { remote, command } => permission_sets(remote, command).await,
        Command::Policies { remote, command } => policies(remote, command).await,
        Command::Workloads { remote, command } => workloads(remote, command).await,
        Command::Routes { remote, command } => routes(remote, command).await,
        Command::Audit { remote, command } => audit(remote, command).await,
        Command::Apply {
            remote,
            file,
            dry_run,
            prune,
        } => apply(remote, &file, dry_run, prune).await,
        Command::Export { remote } => {
            let mut admin = client(&remote).await?;
            let exported = admin.export(pb::ExportRequest {}).answer().await?;
            print!("{}", exported.document);
            Ok(())
        }
        Command::Explain { remote, request } => explain(remote, request).await,
        Command::Config {
            command: ConfigCommand::Check { file, output },
        } => config_check(file.as_deref(), output),
        Command::Completions { shell } => write_out(&help::completions(shell)),
        Command::Man => write_out(&help::man_page()?),
        Command::Help { topic } => {
            print!("{}", help::show(&topic)?);
            Ok(())
        }
    }
}

/// Parses the command line. `Err`: the exit code of a refused command line (2), or of `--help`
/// and `--version` (0), already printed. `Ok`'s flag: errors go out as JSON (`--output json`).
pub fn parse() -> Result<(Cli, bool), std::process::ExitCode> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json_asked = args
        .windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.iter().any(|a| a == "--output=json");
    let refused = |e: clap::Error| exit::report_parse_error(&e, json_asked);
    let matches = Cli::command()
        .try_get_matches_from(&args)
        .map_err(refused)?;
    let cli = Cli::from_arg_matches(&matches).map_err(refused)?;
    Ok((cli, output_of(&matches) == Output::Json))
}

/// The `--output` of the deepest command that has one, so any command with that flag gets JSON
/// errors.
fn output_of(matches: &ArgMatches) -> Output {
    let mut output = Output::Table;
    let mut at = Some(matches);
    while let Some(m) = at {
        if let Ok(Some(found)) = m.try_get_one::<Output>("output") {
            output = *found;
        }
        at = m.subcommand().map(|(_, sub)| sub);
    }
    output
}

/// Writes generated bytes (a man page, completions) to stdout; a closed pipe ends quietly.
fn write_out(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to standard output: {error}");
        }
        std::process::exit(exit::BROKEN_PIPE.into());
    }
    Ok(())
}

/// `keyward config check`: the effective configuration on stdout, every problem on stderr, and
/// exit 8 when there is any.
fn config_check(file: Option<&Path>, output: Output) -> anyhow::Result<()> {
    let environment: std::collections::BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("KEYWARD_"))
        .collect();
    let report = Config::check(file, &environment);
    match output {
        Output::Json => println!("{}", report.to_json()),
        Output::Table => {
            let shown = file.map_or("(none: defaults)".to_owned(), |f| f.display().to_string());
            println!("# keyward config check: file {shown}; KEYWARD_* variables applied");
            for line in report.effective_lines() {
                println!("{line}");
            }
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            for problem in &report.problems {
                eprintln!("problem: {problem}");
            }
        }
    }
    match report.problems.len() {
        0 => Ok(()),
        1 => Err(Failure::new(Kind::Config, report.problems[0].clone()).into()),
        n => Err(Failure::new(Kind::Config, format!("{n} problems in the configuration")).into()),
    }
}

async fn explain(remote: Remote, a: ExplainArgs) -> anyhow::Result<()> {
    let at =
        a.at.as_deref()
            .map(|t| crate::condition::parse_time(t).map_err(|e| anyhow!("--at: {e}")))
            .transpose()?;
    let mut admin = client(&remote).await?;
    let answer = admin
        .explain(pb::ExplainRequest {
            key_id: a.key_id.unwrap_or_default(),
            principal: a.principal.unwrap_or_default(),
            endpoint: a.endpoint,
            deployment: a.deployment.unwrap_or_default(),
            path: a.path.unwrap_or_default(),
            project: a.project.unwrap_or_default(),
            method: a.method.unwrap_or_default(),
            source_ip: a.source_ip.unwrap_or_default(),
            user_agent: a.user_agent.unwrap_or_default(),
            at,
        })
        .answer()
        .await?;
    match remote.output {
        Output::Json => println!(
            "{}",
            json!({
                "decision": if answer.allowed { "allow" } else { "deny" },
                "http_status": answer.http_status,
                "code": answer.code,
                "message": answer.message,
                "at": time_str(Some(answer.at)),
                "reasons": answer.reasons,
            })
        ),
        Output::Table => {
            for line in &answer.reasons {
                println!("{}", table_line(line));
            }
        }
    }
    Ok(())
}

/// A line of server text as a terminal shows it: control characters escaped.
fn table_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// `owner`: a new organization's owner; `None`: recover the existing owner's access.
async fn init(
    config: Option<PathBuf>,
    database: Option<String>,
    owner: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let mut config = Config::load(config.as_deref())?;
    if let Some(url) = database {
        config.database.url = url;
    }
    let store = crate::services::open_store(&config).await?;
    let bootstrap = match owner {
        Some(owner) => crate::admin::bootstrap(&store, &config.argon2, owner).await,
        None => crate::admin::recover_owner(&store, &config.argon2).await,
    };
    store.close().await;
    let crate::admin::Bootstrap {
        principal,
        key_id: id,
        token: minted,
    } = bootstrap?;
    match output {
        Output::Json => println!(
            "{}",
            json!({"principal": principal, "key_id": id, "token": minted})
        ),
        Output::Table => {
            match owner {
                Some(_) => println!("Initialized keyward; owner: {principal}"),
                None => println!("New organization-wide key for the owner {principal}"),
            }
            println!("Owner control token (shown once, store it as a secret):");
            println!("{minted}");
        }
    }
    Ok(())
}

async fn client(
    remote: &Remote,
) -> anyhow::Result<
    AdminClient<
        tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor>,
    >,
> {
    let token = control_token(remote)?;
    let unauthenticated = |message: &str| Failure::new(Kind::Unauthenticated, message);
    if token::Token::parse(&token).map(|t| t.plane) != Ok(Plane::Control) {
        return Err(
            unauthenticated("the control token is malformed: expected an ik_sdk_ token").into(),
        );
    }
    let bearer: MetadataValue<_> = format!("Bearer {}", token.as_str())
        .parse()
        .map_err(|_| unauthenticated("the control token contains invalid characters"))?;
    let tls = crate::tls::ClientTls {
        ca: remote.ca.clone(),
        cert: remote.client_cert.clone(),
        key: remote.client_key.clone(),
    };
    let channel = crate::tls::admin_channel(&remote.server, &tls).await?;
    Ok(AdminClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    ))
}

/// The token from `--token-file` (a file, or `-` for standard input), else `--token` or
/// `KEYWARD_TOKEN`. Errors name the file, never its content.
fn control_token(remote: &Remote) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let missing = || {
        Failure::new(
            Kind::Unauthenticated,
            "no control token: set KEYWARD_TOKEN_FILE or KEYWARD_TOKEN, or pass --token-file",
        )
    };
    let Some(path) = &remote.token_file else {
        return Ok(zeroize::Zeroizing::new(
            remote.token.clone().ok_or_else(missing)?,
        ));
    };
    let (shown, text) = if path == Path::new("-") {
        let text = std::io::read_to_string(std::io::stdin()).map_err(|e| {
            Failure::usage(format!("cannot read the token from standard input: {e}"))
        })?;
        ("standard input".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format!("cannot read --token-file {}: {e}", path.display()))
        })?;
        (path.display().to_string(), text)
    };
    let text = zeroize::Zeroizing::new(text);
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(Failure::new(
            Kind::Unauthenticated,
            format!("no control token in {shown}"),
        )
        .into());
    }
    Ok(zeroize::Zeroizing::new(token.to_owned()))
}

fn status(e: tonic::Status) -> anyhow::Error {
    Refused(e).into()
}

/// `admin.call(…).answer().await?`: the call's message, or its status as the CLI's error.
trait Answer<T> {
    async fn answer(self) -> anyhow::Result<T>;
}

impl<T, F> Answer<T> for F
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    async fn answer(self) -> anyhow::Result<T> {
        Ok(self.await.map_err(status)?.into_inner())
    }
}

async fn projects(remote: Remote, command: ProjectsCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let projects = match command {
        ProjectsCommand::Create { slug } => vec![
            admin
                .create_project(pb::CreateProjectRequest { slug })
                .answer()
                .await?,
        ],
        ProjectsCommand::List => {
            admin
                .list_projects(pb::ListProjectsRequest {})
                .answer()
                .await?
                .projects
        }
        ProjectsCommand::Update { slug, description } => vec![
            admin
                .update_project(pb::UpdateProjectRequest {
                    slug,
                    description: Some(description),
                })
                .answer()
                .await?,
        ],
        ProjectsCommand::Delete { slug } => {
            admin
                .delete_project(pb::DeleteProjectRequest { slug: slug.clone() })
                .answer()
                .await?;
            println!("deleted project {slug}");
            return Ok(());
        }
    };
    let rows: Vec<_> = projects
        .iter()
        .map(|p| {
            json!({"slug": p.slug, "created_at": time_str(Some(p.created_at)),
                   "description": p.description})
        })
        .collect();
    print_rows(remote.output, &["slug", "created_at", "description"], rows);
    Ok(())
}

async fn deployments(remote: Remote, command: DeploymentsCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let split = |name: &str| -> anyhow::Result<(String, String)> {
        let parsed: crate::model::DeploymentName = name.parse().map_err(Failure::usage)?;
        Ok((parsed.project, parsed.slug))
    };
    let deployments = match command {
        DeploymentsCommand::Create {
            name,
            model,
            public_auth,
            private_auth,
        } => {
            let (project, slug) = split(&name)?;
            vec![
                admin
                    .create_deployment(pb::CreateDeploymentRequest {
                        project,
                        slug,
                        model,
                        public_auth: Some(public_auth),
                        private_auth: Some(private_auth),
                    })
                    .answer()
                    .await?,
            ]
        }
        DeploymentsCommand::List { project } => {
            admin
                .list_deployments(pb::ListDeploymentsRequest {
                    project: project.unwrap_or_default(),
                })
                .answer()
                .await?
                .deployments
        }
        DeploymentsCommand::SetAuth {
            name,
            public,
            private,
        } => {
            if public.is_none() && private.is_none() {
                return Err(Failure::usage(
                    "nothing to change: give --public on|off and/or --private on|off",
                )
                .into());
            }
            let (project, slug) = split(&name)?;
            vec![
                admin
                    .set_deployment_auth(pb::SetDeploymentAuthRequest {
                        project,
                        slug,
                        public_auth: public,
                        private_auth: private,
                    })
                    .answer()
                    .await?,
            ]
        }
        DeploymentsCommand::Update {
            name,
            model,
            description,
        } => {
            if model.is_none() && description.is_none() {
                return Err(
                    Failure::usage("nothing to change: give --model and/or --description").into(),
                );
            }
            let (project, slug) = split(&name)?;
            vec![
                admin
                    .update_deployment(pb::UpdateDeploymentRequest {
                        project,
                        slug,
                        model,
                        description,
                    })
                    .answer()
                    .await?,
            ]
        }
        DeploymentsCommand::PublicEndpoint { name, state } => {
            let (project, slug) = split(&name)?;
            vec![
                admin
                    .set_public_endpoint(pb::SetPublicEndpointRequest {
                        project,
                        slug,
                        enabled: state,
                    })
                    .answer()
                    .await?,
            ]
        }
        DeploymentsCommand::Delete { name } => {
            let (project, slug) = split(&name)?;
            let deleted = admin
                .delete_deployment(pb::DeleteDeploymentRequest { project, slug })
                .answer()
                .await?;
            println!(
                "deleted deployment {name}; {} key(s) lost their attachment to it",
                deleted.keys_detached
            );
            return Ok(());
        }
    };
    let on = |b: bool| if b { "on" } else { "off" };
    let rows: Vec<_> = deployments
        .iter()
        .map(|d| {
            json!({
                "deployment": format!("{}/{}", d.project, d.slug),
                "model": d.model,
                "public_auth": on(d.public_auth),
                "private_auth": on(d.private_auth),
                "public_endpoint": on(d.public_endpoint),
                "description": d.description,
            })
        })
        .collect();
    print_rows(
        remote.output,
        &[
            "deployment",
            "model",
            "public_auth",
            "private_auth",
            "public_endpoint",
            "description",
        ],
        rows,
    );
    Ok(())
}

async fn keys(remote: Remote, command: KeysCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let keys = match command {
        KeysCommand::Create {
            plane,
            scope,
            name,
            description,
            expires,
            bearer,
        } => {
            KeyScope::parse(plane, &scope).map_err(Failure::usage)?;
            if let Expiry::At(at) = expires
                && at <= now_unix()
            {
                return Err(Failure::usage("--expires is in the past").into());
            }
            let created = admin
                .create_key(pb::CreateKeyRequest {
                    plane: match plane {
                        Plane::Data => pb::Plane::Data,
                        Plane::Control => pb::Plane::Control,
                    } as i32,
                    scope,
                    name,
                    description,
                    expiry: Some(expiry_pb(expires)),
                    bearer: bearer.unwrap_or_default(),
                })
                .answer()
                .await?;
            print_created(remote.output, created)?;
            return Ok(());
        }
        KeysCommand::Rotate { id, grace } => {
            let rotated = admin
                .rotate_key(pb::RotateKeyRequest {
                    id,
                    grace_seconds: grace,
                })
                .answer()
                .await?;
            print_created(remote.output, rotated)?;
            return Ok(());
        }
        KeysCommand::List {
            project,
            limit,
            page_token,
            deployment,
            expiring,
            unused_for,
        } => {
            let one_page = limit.is_some() || page_token.is_some();
            let mut request = pb::ListKeysRequest {
                project: project.unwrap_or_default(),
                page_size: limit.unwrap_or(0),
                page_token: page_token.unwrap_or_default(),
                deployment: deployment.unwrap_or_default(),
                expiring_within_seconds: expiring,
                unused_for_seconds: unused_for,
            };
            let mut keys = Vec::new();
            loop {
                let page = admin.list_keys(request.clone()).answer().await?;
                keys.extend(page.keys);
                if page.next_page_token.is_empty() {
                    break;
                }
                if one_page {
                    eprintln!("more keys: --page-token {}", page.next_page_token);
                    break;
                }
                request.page_token = page.next_page_token;
            }
            if remote.output == Output::Table {
                warn_expiring(&keys);
            }
            keys
        }
        KeysCommand::Show { id } => vec![admin.get_key(pb::GetKeyRequest { id }).answer().await?],
        KeysCommand::Update {
            id,
            name,
            description,
            attach,
            detach,
            expires,
        } => {
            if name.is_none()
                && description.is_none()
                && attach.is_empty()
                && detach.is_empty()
                && expires.is_none()
            {
                return Err(Failure::usage(
                    "nothing to change: give --name, --description, --attach, --detach or --expires",
                )
                .into());
            }
            vec![
                admin
                    .update_key(pb::UpdateKeyRequest {
                        id,
                        name,
                        description,
                        attach,
                        detach,
                        expiry: expires.map(expiry_pb),
                    })
                    .answer()
                    .await?,
            ]
        }
        KeysCommand::Revoke { id } => vec![
            admin
                .revoke_key(pb::RevokeKeyRequest { id })
                .answer()
                .await?,
        ],
        KeysCommand::Delete { id } => {
            admin
                .delete_key(pb::DeleteKeyRequest { id: id.clone() })
                .answer()
                .await?;
            match remote.output {
                Output::Json => println!("{}", json!({"id": id, "deleted": true})),
                Output::Table => println!("deleted key {id}"),
            }
            return Ok(());
        }
    };
    let rows: Vec<_> = keys.iter().map(key_json).collect();
    match remote.output {
        Output::Json => print_rows(Output::Json, &[], rows),
        Output::Table => print_key_table(rows),
    }
    Ok(())
}

/// A key and its token, which is shown this once.
fn print_created(output: Output, created: pb::CreateKeyResponse) -> anyhow::Result<()> {
    let key = created
        .key
        .ok_or_else(|| anyhow!("the server returned no key"))?;
    match output {
        Output::Json => {
            let mut value = key_json(&key);
            value["token"] = json!(created.token);
            println!("{value}");
        }
        Output::Table => {
            print_key_table(vec![key_json(&key)]);
            println!(
                "\nToken (shown once, store it as a secret):\n{}",
                created.token
            );
        }
    }
    Ok(())
}

async fn apply(remote: Remote, file: &Path, dry_run: bool, prune: bool) -> anyhow::Result<()> {
    let document = if file == Path::new("-") {
        if remote.token_file.as_deref() == Some(Path::new("-")) {
            return Err(Failure::usage(
                "standard input cannot carry both the token (--token-file -) and the file (-f -)",
            )
            .into());
        }
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?
    };
    let mut admin = client(&remote).await?;
    let applied = admin
        .apply(pb::ApplyRequest {
            document,
            dry_run,
            prune,
        })
        .await
        .map_err(|e| status(e).context(file.display().to_string()))?
        .into_inner();
    match remote.output {
        Output::Json => println!(
            "{}",
            json!({"changes": applied.changes, "applied": applied.applied, "dry_run": dry_run})
        ),
        Output::Table => {
            for line in &applied.changes {
                println!("{line}");
            }
            if applied.changes.is_empty() {
                println!("no changes");
            } else if dry_run {
                println!("dry run: nothing changed");
            }
        }
    }
    Ok(())
}

fn principal_rows(output: Output, principals: &[pb::Principal]) {
    let rows = principals
        .iter()
        .map(|p| json!({"principal": p.r#ref, "kind": p.kind, "name": p.name, "keys": p.keys}))
        .collect();
    print_rows(output, &["principal", "kind", "keys"], rows);
}

/// `members` and `apps`: the same three commands for two kinds of principal.
enum PrincipalCommand {
    Add(String),
    List,
    Remove(String),
}

impl From<MembersCommand> for PrincipalCommand {
    fn from(command: MembersCommand) -> Self {
        match command {
            MembersCommand::Add { email } => PrincipalCommand::Add(email),
            MembersCommand::List => PrincipalCommand::List,
            MembersCommand::Remove { email } => PrincipalCommand::Remove(email),
        }
    }
}

impl From<AppsCommand> for PrincipalCommand {
    fn from(command: AppsCommand) -> Self {
        match command {
            AppsCommand::Create { name } => PrincipalCommand::Add(name),
            AppsCommand::List => PrincipalCommand::List,
            AppsCommand::Remove { name } => PrincipalCommand::Remove(name),
        }
    }
}

async fn principals(
    remote: Remote,
    kind: PrincipalKind,
    command: PrincipalCommand,
) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    match command {
        PrincipalCommand::Add(name) => {
            let added = match kind {
                PrincipalKind::Application => {
                    admin
                        .create_application(pb::CreateApplicationRequest { name })
                        .answer()
                        .await
                }
                _ => {
                    admin
                        .add_member(pb::AddMemberRequest { email: name })
                        .answer()
                        .await
                }
            };
            principal_rows(remote.output, &[added?]);
        }
        PrincipalCommand::List => {
            let list = admin
                .list_principals(pb::ListPrincipalsRequest {
                    kind: kind.as_str().into(),
                })
                .answer()
                .await?;
            principal_rows(remote.output, &list.principals);
        }
        PrincipalCommand::Remove(name) => {
            let principal = match kind {
                PrincipalKind::Application => PrincipalRef::App(name),
                _ => PrincipalRef::User(name),
            };
            remove_principal(&mut admin, remote.output, principal.to_string()).await?
        }
    }
    Ok(())
}

async fn remove_principal<T>(
    admin: &mut AdminClient<T>,
    output: Output,
    principal: String,
) -> anyhow::Result<()>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let removed = admin
        .remove_principal(pb::RemovePrincipalRequest {
            principal: principal.clone(),
        })
        .answer()
        .await?;
    match output {
        Output::Json => println!(
            "{}",
            json!({"principal": principal, "removed": true, "keys_deleted": removed.keys_deleted})
        ),
        Output::Table => println!(
            "removed {principal}; {} key(s) deleted",
            removed.keys_deleted
        ),
    }
    Ok(())
}

async fn permission_sets(remote: Remote, command: SetsCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let sets = match command {
        SetsCommand::List => {
            admin
                .list_permission_sets(pb::ListPermissionSetsRequest {})
                .answer()
                .await?
                .permission_sets
        }
        SetsCommand::Put {
            name,
            actions,
            includes,
            description,
        } => vec![
            admin
                .put_permission_set(pb::PermissionSet {
                    name,
                    description,
                    actions,
                    includes,
                    builtin: false,
                })
                .answer()
                .await?,
        ],
        SetsCommand::Delete { name } => {
            admin
                .delete_permission_set(pb::DeletePermissionSetRequest { name: name.clone() })
                .answer()
                .await?;
            println!("deleted permission set {name}");
            return Ok(());
        }
    };
    let rows = sets
        .iter()
        .map(|s| {
            json!({"name": s.name, "builtin": s.builtin, "actions": s.actions,
                   "includes": s.includes, "description": s.description})
        })
        .collect();
    print_rows(
        remote.output,
        &["name", "builtin", "actions", "includes"],
        rows,
    );
    Ok(())
}

/// Builds a rule from flags; the server validates it like any other.
fn rule_pb(r: RuleArgs) -> anyhow::Result<pb::Rule> {
    let mut rule = pb::Rule {
        projects: r.projects,
        all_projects: r.all_projects,
        organization: r.organization,
        permission_sets: r.sets,
        ..pb::Rule::default()
    };
    set_condition_args(&mut rule, r.conditions)?;
    Ok(rule)
}

async fn policies(remote: Remote, command: PoliciesCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let all = |principal: String| pb::ListPoliciesRequest { principal };
    let get = async |admin: &mut AdminClient<_>, name: &str| -> anyhow::Result<pb::Policy> {
        admin
            .list_policies(all(String::new()))
            .answer()
            .await?
            .policies
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Failure::new(Kind::NotFound, format!("policy {name} not found")).into())
    };
    let policies = match command {
        PoliciesCommand::List { principal } => {
            admin
                .list_policies(all(principal.unwrap_or_default()))
                .answer()
                .await?
                .policies
        }
        PoliciesCommand::Show { name } => vec![get(&mut admin, &name).await?],
        PoliciesCommand::Create {
            name,
            principal,
            description,
            rule,
        } => {
            let policy = pb::Policy {
                name,
                description,
                principal: principal.unwrap_or_default(),
                rules: vec![rule_pb(rule)?],
            };
            vec![admin.put_policy(policy).answer().await?]
        }
        PoliciesCommand::AddRule { name, rule } => {
            let mut policy = get(&mut admin, &name).await?;
            policy.rules.push(rule_pb(rule)?);
            vec![admin.put_policy(policy).answer().await?]
        }
        PoliciesCommand::Attach { name, to } => {
            let mut policy = get(&mut admin, &name).await?;
            policy.principal = to;
            vec![admin.put_policy(policy).answer().await?]
        }
        PoliciesCommand::Detach { name } => {
            let mut policy = get(&mut admin, &name).await?;
            policy.principal = String::new();
            vec![admin.put_policy(policy).answer().await?]
        }
        PoliciesCommand::Delete { name } => {
            admin
                .delete_policy(pb::DeletePolicyRequest { name: name.clone() })
                .answer()
                .await?;
            println!("deleted policy {name}");
            return Ok(());
        }
    };
    let rows = policies
        .iter()
        .map(|p| {
            let rules: Vec<String> = p.rules.iter().map(rule_summary).collect();
            json!({
                "name": p.name,
                "principal": if p.principal.is_empty() { "-" } else { &p.principal },
                "description": p.description,
                "rules": rules,
            })
        })
        .collect::<Vec<_>>();
    match remote.output {
        Output::Json => print_rows(Output::Json, &[], rows),
        Output::Table => {
            print_rows(Output::Table, &["name", "principal"], rows.clone());
            for p in &policies {
                for (i, r) in p.rules.iter().enumerate() {
                    println!("  {} rule {}: {}", p.name, i + 1, rule_summary(r));
                }
            }
        }
    }
    Ok(())
}

async fn workloads(remote: Remote, command: WorkloadsCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let workloads = match command {
        WorkloadsCommand::Register { id, project } => vec![
            admin
                .register_workload(pb::Workload { id, project })
                .answer()
                .await?,
        ],
        WorkloadsCommand::List { project } => {
            admin
                .list_workloads(pb::ListWorkloadsRequest {
                    project: project.unwrap_or_default(),
                })
                .answer()
                .await?
                .workloads
        }
        WorkloadsCommand::Delete { id, project } => {
            admin
                .delete_workload(pb::DeleteWorkloadRequest {
                    id: id.clone(),
                    project: project.unwrap_or_default(),
                })
                .answer()
                .await?;
            println!("deleted workload {id}");
            return Ok(());
        }
    };
    let rows = workloads
        .iter()
        .map(|w| json!({"id": w.id, "project": w.project}))
        .collect();
    print_rows(remote.output, &["id", "project"], rows);
    Ok(())
}

async fn routes(remote: Remote, command: RoutesCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let routes = match command {
        RoutesCommand::Add {
            host,
            prefix,
            deployment,
            control_project,
            control,
            endpoint,
            replace,
        } => {
            let plane = if control || control_project.is_some() {
                pb::Plane::Control
            } else {
                pb::Plane::Data
            };
            let route = pb::Route {
                host,
                path_prefix: prefix,
                endpoint,
                deployment: deployment.unwrap_or_default(),
                control_project: control_project.unwrap_or_default(),
                plane: plane.into(),
            };
            let request = pb::PutRouteRequest {
                route: Some(route),
                replace,
            };
            vec![admin.put_route(request).answer().await?]
        }
        RoutesCommand::List => {
            admin
                .list_routes(pb::ListRoutesRequest {})
                .answer()
                .await?
                .routes
        }
        RoutesCommand::Remove { host, prefix } => {
            admin
                .delete_route(pb::DeleteRouteRequest {
                    host: host.clone(),
                    path_prefix: prefix.clone(),
                })
                .answer()
                .await?;
            println!("removed route {host}{prefix}");
            return Ok(());
        }
    };
    let optional = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let rows = routes
        .iter()
        .map(|r| {
            let plane = if pb::Plane::try_from(r.plane) == Ok(pb::Plane::Control) {
                "control"
            } else {
                "data"
            };
            let target = match (optional(&r.deployment), optional(&r.control_project)) {
                (Some(deployment), _) => deployment,
                (None, Some(project)) => format!("project {project}"),
                (None, None) => "project from the path".to_owned(),
            };
            json!({
                "host": r.host,
                "path_prefix": r.path_prefix,
                "plane": plane,
                "endpoint": r.endpoint,
                "target": target,
                "deployment": optional(&r.deployment),
                "control_project": optional(&r.control_project),
            })
        })
        .collect();
    print_rows(
        remote.output,
        &["host", "path_prefix", "plane", "endpoint", "target"],
        rows,
    );
    Ok(())
}

fn key_json(k: &pb::Key) -> serde_json::Value {
    let plane = match pb::Plane::try_from(k.plane) {
        Ok(pb::Plane::Data) => "data",
        Ok(pb::Plane::Control) => "control",
        _ => "unknown",
    };
    let status = match crate::policy::validity(k.revoked_at, k.expires_at, now_unix()) {
        Ok(()) => "active",
        Err(crate::policy::InvalidReason::Revoked) => "revoked",
        Err(_) => "expired",
    };
    let expiring_soon = crate::model::expires_soon(k.revoked_at, k.expires_at, now_unix());
    json!({
        "id": k.id,
        "plane": plane,
        "name": k.name,
        "description": k.description,
        "principal": k.principal,
        "scope": k.scope,
        "status": status,
        "expiring_soon": expiring_soon,
        "expires_at": k.expires_at.map_or("never".to_owned(), |at| time_str(Some(at))),
        "created_at": time_str(Some(k.created_at)),
        "revoked_at": time_str(k.revoked_at),
        "last_used_at": time_str(k.last_used_at),
    })
}

fn print_key_table(mut rows: Vec<serde_json::Value>) {
    for row in &mut rows {
        if row["expiring_soon"] == json!(true) {
            row["status"] = json!(EXPIRING_MARK);
        }
    }
    print_rows(
        Output::Table,
        &[
            "id",
            "plane",
            "name",
            "scope",
            "status",
            "expires_at",
            "last_used_at",
        ],
        rows,
    );
}

/// The status a key table shows for an active key expiring within 7 days.
const EXPIRING_MARK: &str = "active (EXPIRES SOON)";

/// One line on stderr naming the listed keys that expire within 7 days.
fn warn_expiring(keys: &[pb::Key]) {
    let now = now_unix();
    let soon: Vec<&str> = keys
        .iter()
        .filter(|k| crate::model::expires_soon(k.revoked_at, k.expires_at, now))
        .map(|k| k.id.as_str())
        .collect();
    if !soon.is_empty() {
        eprintln!(
            "warning: {} key{} expire{} within 7 days: {}",
            soon.len(),
            if soon.len() == 1 { "" } else { "s" },
            if soon.len() == 1 { "s" } else { "" },
            soon.join(", ")
        );
    }
}

async fn audit(remote: Remote, command: AuditCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let AuditCommand::List {
        since,
        principal,
        target,
        action,
        limit,
        page_token,
    } = command;
    let one_page = limit.is_some();
    let mut request = pb::ListAuditRequest {
        since,
        principal: principal.unwrap_or_default(),
        target: target.unwrap_or_default(),
        action: action.unwrap_or_default(),
        page_size: limit.unwrap_or(0),
        page_token: page_token.unwrap_or_default(),
    };
    let mut records = Vec::new();
    loop {
        let page = admin.list_audit(request.clone()).answer().await?;
        let asked = match request.page_size {
            0 => 100,
            n => n as usize,
        };
        let more = page.records.len() == asked;
        records.extend(page.records);
        if !more {
            break;
        }
        if one_page {
            eprintln!("more records: --page-token {}", page.next_page_token);
            break;
        }
        request.page_token = page.next_page_token;
    }
    let rows: Vec<serde_json::Value> = records.iter().map(audit_json).collect();
    match remote.output {
        // JSON lines: one record a line, ready for a log shipper.
        Output::Json => {
            for row in rows {
                println!("{row}");
            }
        }
        Output::Table => print_rows(
            Output::Table,
            &[
                "at",
                "outcome",
                "principal",
                "key_id",
                "peer",
                "action",
                "target",
                "summary",
            ],
            rows,
        ),
    }
    Ok(())
}

fn audit_json(r: &pb::AuditRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "at": time_str(Some(r.at)),
        "principal": r.principal,
        "key_id": r.key_id,
        "peer": r.peer,
        "action": r.action,
        "target": r.target,
        "summary": r.summary,
        "outcome": r.outcome,
    })
}

/// A duration: a whole number with a unit `s`, `m`, `h`, `d` or `w` (`30d`), at most 100 years.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?}: use a number with s, m, h, d or w (e.g. 30d)");
    let split = s.char_indices().last().ok_or_else(bad)?.0;
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(scale)
        .filter(|seconds| *seconds <= 100 * 365 * 86_400)
        .ok_or_else(bad)
}

/// `--since`: `YYYY-MM-DD` (00:00 UTC), an RFC 3339 instant, or a duration ago (`24h`).
pub fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(ago) = parse_duration(s) {
        return Ok(now_unix().saturating_sub(ago as i64));
    }
    match parse_expiry(s) {
        Ok(Expiry::At(at)) => Ok(at),
        _ => Err(format!(
            "invalid --since {s:?}: use YYYY-MM-DD, an RFC 3339 time, or a duration ago (24h, 7d)"
        )),
    }
}

fn time_str(at: Option<i64>) -> String {
    at.and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}

/// JSON: an array of objects (one object for a single created or updated item). Table: the
/// named columns, aligned.
fn print_rows(output: Output, columns: &[&str], rows: Vec<serde_json::Value>) {
    if output == Output::Json {
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!("{}", table::render(columns, &rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates_mean_midnight_utc() {
        assert_eq!(parse_expiry("never"), Ok(Expiry::Never));
        assert_eq!(parse_expiry("2030-01-02"), Ok(Expiry::At(1_893_542_400)));
        assert_eq!(
            parse_expiry("2030-01-02T01:00:00+01:00"),
            Ok(Expiry::At(1_893_542_400))
        );
        for bad in ["2030-13-01", "tomorrow", "2030-01-02T00:00:00", ""] {
            let err = parse_expiry(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn grace_periods_parse_with_units_and_a_cap() {
        assert_eq!(parse_grace("0"), Ok(0));
        assert_eq!(parse_grace("45s"), Ok(45));
        assert_eq!(parse_grace("15m"), Ok(900));
        assert_eq!(parse_grace("2h"), Ok(7_200));
        assert_eq!(parse_grace("30d"), Ok(2_592_000));
        assert_eq!(parse_grace("1h 30m"), Ok(5_400));
        assert_eq!(parse_grace("1w"), Ok(604_800));
        assert_eq!(parse_grace("1.5h"), Ok(5_400));
        for bad in [
            "",
            "5",
            "-1s",
            "31d",
            "5w",
            "h",
            "0.5s",
            "1500ms",
            "99999999999999999999d",
        ] {
            assert!(parse_grace(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn flags_parse_and_bad_ones_fail() {
        let ok = Cli::try_parse_from([
            "keyward",
            "keys",
            "create",
            "--plane",
            "data",
            "--scope",
            "a/b",
            "a/*",
            "--expires",
            "2031-01-01",
        ]);
        assert!(ok.is_ok());
        let Cli {
            command:
                Command::Deployments {
                    command:
                        DeploymentsCommand::Create {
                            public_auth,
                            private_auth,
                            ..
                        },
                    ..
                },
        } = Cli::try_parse_from([
            "keyward",
            "deployments",
            "create",
            "a/b",
            "--model",
            "m",
            "--public-auth",
            "off",
        ])
        .unwrap()
        else {
            panic!("deployments create expected")
        };
        assert!(!public_auth && private_auth);
        for bad in [
            vec![
                "keyward", "keys", "create", "--plane", "both", "--scope", "a/b",
            ],
            vec!["keyward", "keys", "create", "--plane", "data"],
            vec![
                "keyward",
                "deployments",
                "create",
                "a/b",
                "--model",
                "m",
                "--public-auth",
                "maybe",
            ],
            vec![
                "keyward",
                "keys",
                "create",
                "--plane",
                "data",
                "--scope",
                "a/b",
                "--expires",
                "soon",
            ],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_route_has_exactly_one_target() {
        let route = |target: &[&str]| {
            let mut args = vec!["keyward", "routes", "add", "--host", "*", "--prefix", "/a"];
            args.extend(target);
            Cli::try_parse_from(args)
        };
        for good in [
            &["--deployment", "a/b"][..],
            &["--deployment", "a/b", "--endpoint", "private"],
            &["--control-project", "a"],
            &["--control"],
        ] {
            assert!(route(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            &[][..],
            &["--deployment", "a/b", "--control-project", "a"],
            &["--deployment", "a/b", "--control"],
            &["--control-project", "a", "--control"],
            &["--deployment", "a/b", "--endpoint", "internal"],
        ] {
            assert!(route(bad).is_err(), "{bad:?} accepted");
        }
    }
}
