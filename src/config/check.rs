//! `keyward config check`: the configuration a server would run with, from a file and the
//! environment, with where each value came from, every bad value named and secrets redacted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::env::{self, NOT_CONFIG};
use super::{Config, ConfigError};

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Env(var) => f.write_str(var),
        }
    }
}

#[derive(Debug)]
pub struct CheckReport {
    pub file: Option<PathBuf>,
    /// The effective configuration; `None` when the file cannot be read or parsed.
    pub config: Option<Config>,
    /// Every bad value, each naming its key or variable.
    pub problems: Vec<String>,
    /// Not errors: unknown `KEYWARD_*` variables (a typo is ignored by the server).
    pub warnings: Vec<String>,
    /// Key → source, for every key.
    pub sources: BTreeMap<String, Source>,
}

impl Config {
    /// Reads `path` (if any) and `environment` as `serve` would, and reports every problem
    /// instead of stopping at the first.
    pub fn check(path: Option<&Path>, environment: &BTreeMap<String, String>) -> CheckReport {
        let mut report = CheckReport {
            file: path.map(Path::to_path_buf),
            config: None,
            problems: Vec::new(),
            warnings: Vec::new(),
            sources: BTreeMap::new(),
        };
        let variables = env::variables();
        for name in environment.keys().filter(|n| n.starts_with("KEYWARD_")) {
            let known = NOT_CONFIG.contains(&name.as_str())
                || variables.iter().any(|v| v.names.contains(name));
            if !known {
                report.warnings.push(format!(
                    "{name} is not a keyward variable and is ignored (see `keyward help environment`)"
                ));
            }
        }
        let (base, in_file) = match path {
            None => (Config::default(), toml::Table::new()),
            Some(path) => match Config::from_file(path) {
                Ok(config) => {
                    let table = std::fs::read_to_string(path)
                        .ok()
                        .and_then(|text| text.parse::<toml::Table>().ok())
                        .unwrap_or_default();
                    (config, table)
                }
                Err(e) => {
                    report.problems.push(e.to_string());
                    return report;
                }
            },
        };
        let lookup = |name: &str| environment.get(name).cloned();
        let (mut config, overlay) = match env::overlay(&base, &lookup) {
            Ok(done) => done,
            Err(e) => {
                report.problems.push(e.to_string());
                return report;
            }
        };
        report
            .problems
            .extend(overlay.problems.iter().map(ConfigError::to_string));
        report.problems.extend(
            config
                .problems()
                .into_iter()
                .map(|p| ConfigError::Invalid(p).to_string()),
        );
        for variable in variables {
            let source = match overlay.applied.iter().find(|(key, _)| *key == variable.key) {
                Some((_, var)) => Source::Env(var.clone()),
                None if in_table(&in_file, &variable.key) => Source::File,
                None => Source::Default,
            };
            report.sources.insert(variable.key, source);
        }
        report.config = Some(config);
        report
    }
}

fn in_table(table: &toml::Table, key: &str) -> bool {
    let mut parts = key.split('.');
    let Some(first) = parts.next() else {
        return false;
    };
    let mut at = table.get(first);
    for part in parts {
        at = at.and_then(|v| v.as_table()).and_then(|t| t.get(part));
    }
    at.is_some()
}

/// The configuration as JSON with its secrets replaced: the database URL's password (and any
/// `password` query parameter).
fn redacted(config: &Config) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(url) = value.pointer_mut("/database/url") {
        let shown = url.as_str().map(redact_url).unwrap_or_default();
        *url = Value::String(shown);
    }
    value
}

pub(crate) fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        // Not a URL we can take apart: show only its scheme.
        return match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(redacted)"),
            None => "(redacted)".to_owned(),
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("REDACTED"));
    }
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let secret = k.to_ascii_lowercase().contains("password");
            (
                k.into_owned(),
                if secret {
                    "REDACTED".into()
                } else {
                    v.into_owned()
                },
            )
        })
        .collect();
    if !query.is_empty() {
        url.query_pairs_mut().clear().extend_pairs(query);
    }
    url.to_string()
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The effective configuration as dotted TOML lines, each with its source; unset keys as
    /// comments.
    pub fn effective_lines(&self) -> Vec<String> {
        let Some(config) = &self.config else {
            return Vec::new();
        };
        let value = redacted(config);
        let mut lines = Vec::new();
        for (key, source) in &self.sources {
            let at = value.pointer(&format!("/{}", key.replace('.', "/")));
            let line = match at {
                None | Some(Value::Null) => format!("# {key} (unset)"),
                Some(v) => format!("{key} = {}", toml_value(v)),
            };
            lines.push(format!("{line:<56} # {source}"));
        }
        lines
    }

    pub fn to_json(&self) -> Value {
        let sources: BTreeMap<&String, String> = self
            .sources
            .iter()
            .map(|(k, s)| (k, s.to_string()))
            .collect();
        json!({
            "file": self.file.as_ref().map(|p| p.display().to_string()),
            "valid": self.ok(),
            "problems": self.problems,
            "warnings": self.warnings,
            "effective": self.config.as_ref().map(redacted),
            "sources": sources,
        })
    }
}

fn toml_value(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        Value::String(s) => toml::Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "[cache]\ncapacity = 0\n[verify]\nnice = 42\n").unwrap();
        let report = Config::check(
            Some(&path),
            &vars(&[
                ("KEYWARD_ADMIN_ADDR", "nowhere"),
                ("KEYWARD_CACHE_TTL_SEC", "5"),
                ("KEYWARD_TOKEN", "ik_sdk_not_config"),
            ]),
        );
        assert!(!report.ok());
        let all = report.problems.join("\n");
        for needle in ["cache.capacity", "verify.nice", "KEYWARD_ADMIN_ADDR"] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
        assert_eq!(report.problems.len(), 3, "{all}");
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("KEYWARD_CACHE_TTL_SEC "));
    }

    #[test]
    fn sources_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            "[database]\nurl = \"postgres://kw:hunter2@db:5432/kw?sslmode=require&password=hunter3\"\n",
        )
        .unwrap();
        let report = Config::check(Some(&path), &vars(&[("KEYWARD_CACHE_TTL_SECS", "10m")]));
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.sources["database.url"], Source::File);
        assert_eq!(
            report.sources["cache.ttl_secs"],
            Source::Env("KEYWARD_CACHE_TTL_SECS".into())
        );
        assert_eq!(report.sources["cache.capacity"], Source::Default);
        let text = report.effective_lines().join("\n");
        let json = report.to_json().to_string();
        for shown in [&text, &json] {
            assert!(!shown.contains("hunter"), "{shown}");
            assert!(
                shown.contains("REDACTED") && shown.contains("sslmode=require"),
                "{shown}"
            );
        }
        assert!(text.contains("cache.ttl_secs = 600"), "{text}");
        assert!(text.contains("# tls.check.cert (unset)"), "{text}");
        assert_eq!(redact_url("not a url hunter2"), "(redacted)");
        assert_eq!(redact_url("sqlite://keyward.db"), "sqlite://keyward.db");
    }

    #[test]
    fn an_unreadable_or_malformed_file_is_a_problem() {
        let report = Config::check(Some(Path::new("/nonexistent/k.toml")), &BTreeMap::new());
        assert!(report.problems[0].contains("/nonexistent/k.toml"));
        assert!(report.config.is_none());
    }
}
