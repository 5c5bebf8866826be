//! The `keyward` command line. `serve` runs the server and `init` works on the database
//! directly; every other command calls the admin API of a running server with a control token.
//! Tables for people, `--output json` for scripts; failures print one line and exit non-zero.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
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

#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about = "Envoy ext_authz server for inference API keys"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Check, admin and health servers.
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
        #[arg(long, env = "KEYWARD_CONFIG")]
        config: Option<PathBuf>,
        /// The owner's name or email.
        #[arg(long, default_value = "owner")]
        owner: String,
        /// On an initialized database: mint another organization-wide control key for the
        /// owner (lost, revoked or deleted keys), print it once and log its id.
        #[arg(long, conflicts_with = "owner")]
        recover: bool,
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
    /// Workload ids, so `/api/workloads/:id` control routes resolve their project.
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
    Export {
        #[command(flatten)]
        remote: Remote,
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
pub enum MembersCommand {
    Add {
        email: String,
    },
    List,
    /// Remove a member: its keys are deleted at once, its policies detached.
    Remove {
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    Create {
        name: String,
    },
    List,
    /// Remove an application: its keys are deleted at once, its policies detached.
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SetsCommand {
    List,
    /// Create or replace a custom permission set.
    Put {
        name: String,
        #[arg(long, value_delimiter = ',')]
        actions: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        includes: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    Delete {
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
    List {
        /// Only policies attached to this principal (user:EMAIL or app:NAME).
        #[arg(long)]
        principal: Option<String>,
    },
    Show {
        name: String,
    },
    /// Create (or replace) a policy with one rule.
    Create {
        name: String,
        /// user:EMAIL or app:NAME; omitted: detached.
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Append a rule to a policy.
    AddRule {
        name: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Attach a policy to a principal (user:EMAIL or app:NAME).
    Attach {
        name: String,
        #[arg(long)]
        to: String,
    },
    Detach {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkloadsCommand {
    Register {
        id: String,
        #[arg(long)]
        project: String,
    },
    List {
        #[arg(long)]
        project: Option<String>,
    },
    Delete {
        id: String,
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
        #[arg(long)]
        host: String,
        #[arg(long)]
        prefix: String,
    },
}

/// How to reach and authenticate to a running keyward.
#[derive(Debug, Args)]
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
    /// Control-plane token (ik_sdk_…).
    #[arg(long, global = true, env = "KEYWARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
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
    Create { slug: String },
    List,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// Register a deployment: `PROJECT/SLUG`.
    Create {
        name: String,
        #[arg(long)]
        model: String,
        #[arg(long, value_parser = on_off, default_value = "on", action = clap::ArgAction::Set)]
        public_auth: bool,
        #[arg(long, value_parser = on_off, default_value = "on", action = clap::ArgAction::Set)]
        private_auth: bool,
    },
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Switch API-key authentication on or off per endpoint, effective on the next request.
    SetAuth {
        name: String,
        #[arg(long, value_parser = on_off)]
        public: Option<bool>,
        #[arg(long, value_parser = on_off)]
        private: Option<bool>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token once.
    Create {
        #[arg(long, value_parser = parse_plane)]
        plane: Plane,
        /// Data keys: one or more PROJECT/SLUG or PROJECT/*; control keys: one PROJECT.
        #[arg(long, num_args = 1.., required = true)]
        scope: Vec<String>,
        #[arg(long, default_value = "")]
        name: String,
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
        #[arg(long)]
        project: Option<String>,
        /// One page of at most this many keys (at most 1000); the next page's token goes to
        /// stderr.
        #[arg(long)]
        limit: Option<u32>,
        /// The page after the one that printed this token.
        #[arg(long)]
        page_token: Option<String>,
    },
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        attach: Vec<String>,
        #[arg(long)]
        detach: Vec<String>,
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<Expiry>,
    },
    /// Give a key a new secret (same id, scope, bearer, name and expiry); print it once.
    Rotate {
        id: String,
        /// How long the old secret keeps working: 0 (default: at once), or e.g. 30s, 15m, 2h, 7d.
        #[arg(long, value_parser = parse_grace, default_value = "0")]
        grace: u64,
    },
    /// Revoke a key: every later request with it is denied.
    Revoke {
        id: String,
    },
    Delete {
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

/// A grace period in seconds: `0`, or a whole number with a unit `s`, `m`, `h` or `d`, at most
/// 30 days.
pub fn parse_grace(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid grace {s:?}: use 0 or a number with s, m, h or d (at most 30d)");
    if s == "0" {
        return Ok(0);
    }
    // The unit is the last character, which may be more than one byte.
    let split = s.char_indices().last().ok_or_else(bad)?.0;
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let seconds = number.checked_mul(scale).ok_or_else(bad)?;
    if seconds > 30 * 86_400 {
        return Err(bad());
    }
    Ok(seconds)
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
    let token = remote
        .token
        .clone()
        .ok_or_else(|| anyhow!("no control token: set KEYWARD_TOKEN or pass --token"))?;
    if token::Token::parse(&token).map(|t| t.plane) != Ok(Plane::Control) {
        bail!("the control token is malformed: expected an ik_sdk_ token");
    }
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow!("the control token contains invalid characters"))?;
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

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow!("{}", e.message())
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
    };
    let rows: Vec<_> = projects
        .iter()
        .map(|p| json!({"slug": p.slug, "created_at": time_str(Some(p.created_at))}))
        .collect();
    print_rows(remote.output, &["slug", "created_at"], rows);
    Ok(())
}

async fn deployments(remote: Remote, command: DeploymentsCommand) -> anyhow::Result<()> {
    let mut admin = client(&remote).await?;
    let split = |name: &str| -> anyhow::Result<(String, String)> {
        let parsed: crate::model::DeploymentName = name.parse().map_err(|e: String| anyhow!(e))?;
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
                bail!("nothing to change: give --public on|off and/or --private on|off");
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
            })
        })
        .collect();
    print_rows(
        remote.output,
        &["deployment", "model", "public_auth", "private_auth"],
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
            KeyScope::parse(plane, &scope).map_err(|e| anyhow!(e))?;
            if let Expiry::At(at) = expires
                && at <= now_unix()
            {
                bail!("--expires is in the past");
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
        } => {
            let one_page = limit.is_some() || page_token.is_some();
            let mut request = pb::ListKeysRequest {
                project: project.unwrap_or_default(),
                page_size: limit.unwrap_or(0),
                page_token: page_token.unwrap_or_default(),
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
                bail!(
                    "nothing to change: give --name, --description, --attach, --detach or --expires"
                );
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
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let mut admin = client(&remote).await?;
    let applied = admin
        .apply(pb::ApplyRequest {
            document,
            dry_run,
            prune,
        })
        .await
        .map_err(|e| anyhow!("{}: {}", file.display(), e.message()))?
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
            .ok_or_else(|| anyhow!("policy {name} not found"))
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
        WorkloadsCommand::Delete { id } => {
            admin
                .delete_workload(pb::DeleteWorkloadRequest { id: id.clone() })
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
    json!({
        "id": k.id,
        "plane": plane,
        "name": k.name,
        "description": k.description,
        "principal": k.principal,
        "scope": k.scope,
        "status": status,
        "expires_at": k.expires_at.map_or("never".to_owned(), |at| time_str(Some(at))),
        "created_at": time_str(Some(k.created_at)),
        "revoked_at": time_str(k.revoked_at),
        "last_used_at": time_str(k.last_used_at),
    })
}

fn print_key_table(rows: Vec<serde_json::Value>) {
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

fn time_str(at: Option<i64>) -> String {
    at.and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}

/// The longest cell a table shows, in characters.
const CELL_MAX: usize = 80;

/// Text as a table shows it: at most [`CELL_MAX`] of its characters, control characters
/// escaped (a name stored with an ANSI escape must not drive the terminal).
fn table_cell(text: &str) -> String {
    let long = text.chars().nth(CELL_MAX).is_some();
    let kept = if long { CELL_MAX - 1 } else { CELL_MAX };
    let mut shown = String::new();
    for c in text.chars().take(kept) {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if long {
        shown.push('…');
    }
    shown
}

/// JSON: an array of objects (one object for a single created or updated item). Table: the
/// named columns, aligned.
fn print_rows(output: Output, columns: &[&str], rows: Vec<serde_json::Value>) {
    if output == Output::Json {
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    let cell = |row: &serde_json::Value, column: &str| match &row[column] {
        serde_json::Value::String(s) => table_cell(s),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join(","),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for row in &rows {
        println!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_are_bounded_and_inert() {
        // Stored before names were bounded: a huge name and a terminal escape.
        let rows = vec![
            json!({"id": "a", "name": "k".repeat(65_536)}),
            json!({"id": "b", "name": "\u{1b}[2Jowned"}),
        ];
        print_rows(Output::Table, &["id", "name"], rows);
        let long = "k".repeat(65_536);
        assert_eq!(table_cell(&long).chars().count(), CELL_MAX);
        assert!(table_cell(&long).ends_with("k…"));
        assert_eq!(table_cell(&"k".repeat(CELL_MAX)), "k".repeat(CELL_MAX));
        assert_eq!(table_cell("\u{1b}[2Jowned"), "\\u{1b}[2Jowned");
        assert_eq!(table_cell("deploy bot — CI"), "deploy bot — CI");
    }

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
        for bad in [
            "",
            "5",
            "-1s",
            "31d",
            "1w",
            "h",
            "1.5h",
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
