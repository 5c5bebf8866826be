//! Help beyond `--help`, all generated from the clap definitions: `keyward help [COMMAND…|TOPIC]`,
//! the man page (`keyward man`) and shell completions (`keyward completions SHELL`).

use std::io::Write;

use clap::CommandFactory;

use super::Cli;
use super::exit::{self, Failure};

/// Topics `keyward help TOPIC` knows besides the commands.
pub const TOPICS: [(&str, &str); 3] = [
    ("exit-codes", "what each exit status means"),
    (
        "environment",
        "the KEYWARD_* variables the CLI and the server read",
    ),
    (
        "config",
        "the configuration file, its layering and `keyward config check`",
    ),
];

/// The CLI's own variables; the server's are derived from its configuration fields.
pub const CLI_ENVIRONMENT: &str = "\
CLI variables (flags override them):
  KEYWARD_SERVER        admin API address (--server), default http://127.0.0.1:9192
  KEYWARD_TOKEN_FILE    file holding the control token, `-` for standard input (--token-file)
  KEYWARD_TOKEN         the control token itself (--token); prefer KEYWARD_TOKEN_FILE: a value
                        on the command line is visible in the process list
  KEYWARD_CA            CA certificate (PEM) for an https:// admin API (--ca)
  KEYWARD_CLIENT_CERT   client certificate (PEM) for mutual TLS (--client-cert)
  KEYWARD_CLIENT_KEY    its private key (PEM) (--client-key)
  KEYWARD_CONFIG        configuration file for serve, init and config check (--config)
  KEYWARD_LOG           log filter, e.g. info or keyward=debug; KEYWARD_LOG_FORMAT=json
";

const CONFIG_TOPIC: &str = "\
Configuration: a TOML file (keyward serve --config FILE, or KEYWARD_CONFIG), every key optional,
overlaid by one KEYWARD_* variable per key. The variable's name is the key's path in upper case
joined by `_`: cache.ttl_secs is KEYWARD_CACHE_TTL_SECS, tls.check.cert KEYWARD_TLS_CHECK_CERT.
Durations (keys ending in _secs or _ms) take a number in that unit or a duration with units:
ttl_secs = \"5m\", KEYWARD_PROPAGATION_POLL_INTERVAL_MS=250ms.

examples/keyward.toml documents every key with its default. To see what a server would run
with, every bad value named and secrets redacted:

  keyward config check examples/keyward.toml
  KEYWARD_CACHE_TTL_SECS=10m keyward config check --output json
";

/// `keyward help`: the top-level help; `keyward help keys create`: that command's; `keyward
/// help exit-codes`: a topic.
pub fn show(path: &[String]) -> anyhow::Result<String> {
    match path {
        [topic] if topic == "exit-codes" => return Ok(exit::table()),
        [topic] if topic == "environment" => {
            return Ok(format!(
                "{CLI_ENVIRONMENT}\nServer variables, one per configuration key:\n{}",
                crate::config::env_reference()
            ));
        }
        [topic] if topic == "config" => return Ok(CONFIG_TOPIC.to_owned()),
        _ => {}
    }
    let mut command = Cli::command();
    command.build();
    let mut current = &mut command;
    for name in path {
        current = current.find_subcommand_mut(name).ok_or_else(|| {
            let topics: Vec<&str> = TOPICS.iter().map(|(t, _)| *t).collect();
            Failure::usage(format!(
                "no command or help topic {name:?} (topics: {})",
                topics.join(", ")
            ))
        })?;
    }
    Ok(current.render_long_help().to_string())
}

/// The man page of `keyward` (roff), with its EXIT STATUS and ENVIRONMENT sections.
pub fn man_page() -> anyhow::Result<Vec<u8>> {
    let command = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(command).render(&mut out)?;
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for line in exit::table().lines().skip(1) {
        writeln!(out, ".br\n{}", roff_escape(line.trim_start()))?;
    }
    writeln!(out, ".SH ENVIRONMENT")?;
    for line in CLI_ENVIRONMENT.lines().skip(1) {
        writeln!(out, ".br\n{}", roff_escape(line.trim_start()))?;
    }
    writeln!(
        out,
        ".PP\nServer: one KEYWARD_* variable per configuration key; see keyward help environment."
    )?;
    Ok(out)
}

/// Text safe in a roff line: no leading control character, backslashes doubled.
fn roff_escape(line: &str) -> String {
    let escaped = line.replace('\\', "\\\\");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Completions for `shell`, e.g. `source <(keyward completions bash)`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "keyward", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every flag or argument has help text, so `--help` never shows a bare
    /// name.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "keyward", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn topics_and_commands_have_help_and_unknown_ones_are_usage_errors() {
        assert!(show(&["exit-codes".into()]).unwrap().contains("not_found"));
        assert!(
            show(&["environment".into()])
                .unwrap()
                .contains("KEYWARD_CACHE_TTL_SECS")
        );
        let keys_create = show(&["keys".into(), "create".into()]).unwrap();
        assert!(keys_create.contains("--scope"), "{keys_create}");
        let err = show(&["frobnicate".into()]).unwrap_err();
        assert_eq!(exit::kind_of(&err), exit::Kind::Usage);
        assert!(err.to_string().contains("frobnicate"));
    }

    #[test]
    fn the_man_page_has_the_exit_codes() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains("EXIT STATUS") && page.contains("permission_denied"));
    }
}
