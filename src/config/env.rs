//! The `KEYWARD_*` overlay, derived from the configuration's own fields: every leaf key of
//! [`Config`] has the variable `KEYWARD_` + its path in upper case joined by `_`
//! (`cache.ttl_secs` → `KEYWARD_CACHE_TTL_SECS`), so a new field has its variable without anyone
//! listing it. A few keys also keep the shorter names they were published under.

use serde_json::Value;

use super::{Config, ConfigError};

/// Names published before the variables were derived, still read: (variable, key path).
const ALIASES: [(&str, &str); 5] = [
    ("KEYWARD_CHECK_ADDR", "listen.check"),
    ("KEYWARD_ADMIN_ADDR", "listen.admin"),
    ("KEYWARD_HEALTH_ADDR", "listen.health"),
    ("KEYWARD_CHECK_UNIX", "listen.check_unix"),
    ("KEYWARD_CREDENTIAL_SOURCES", "credentials.sources"),
];

/// `KEYWARD_*` variables that are not configuration keys: the CLI's, and those read by
/// `envoy/render.sh` and the scripts. `config check` warns about any other unknown one (a typo).
pub const NOT_CONFIG: [&str; 23] = [
    "KEYWARD_CONFIG",
    "KEYWARD_LOG",
    "KEYWARD_LOG_FORMAT",
    "KEYWARD_SERVER",
    "KEYWARD_TOKEN",
    "KEYWARD_TOKEN_FILE",
    "KEYWARD_CA",
    "KEYWARD_CLIENT_CERT",
    "KEYWARD_CLIENT_KEY",
    "KEYWARD_ADDRS",
    "KEYWARD_ENDPOINTS",
    "KEYWARD_HOST",
    "KEYWARD_PORT",
    "KEYWARD_SOCKET",
    "KEYWARD_TLS",
    "KEYWARD_TLS_SNI",
    "KEYWARD_TLS_CA",
    "KEYWARD_TLS_CLIENT_CERT",
    "KEYWARD_TLS_CLIENT_KEY",
    "KEYWARD_MTLS",
    "KEYWARD_BIN",
    "KEYWARD_BINARY",
    "KEYWARD_TEST_POSTGRES",
];

/// One configuration key and the variables that set it.
#[derive(Debug, Clone)]
pub struct Variable {
    /// `cache.ttl_secs`.
    pub key: String,
    /// The derived name first, then any older alias.
    pub names: Vec<String>,
    /// The default value's JSON form: it tells how a variable's text is read.
    default: Value,
}

/// Every configuration key with its variables, in the order of the configuration.
pub fn variables() -> Vec<Variable> {
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    let mut out = Vec::new();
    leaves(&defaults, &mut Vec::new(), &mut out);
    out
}

fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<Variable>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                path.push(name.clone());
                leaves(field, path, out);
                path.pop();
            }
        }
        leaf => {
            let key = path.join(".");
            let mut names = vec![format!("KEYWARD_{}", path.join("_").to_uppercase())];
            names.extend(
                ALIASES
                    .iter()
                    .filter(|(_, k)| *k == key)
                    .map(|(var, _)| (*var).to_owned()),
            );
            out.push(Variable {
                key,
                names,
                default: leaf.clone(),
            });
        }
    }
}

/// The variable table for `keyward help environment`.
pub fn env_reference() -> String {
    variables()
        .iter()
        .map(|v| format!("  {:<40} {}\n", v.names.join(" | "), v.key))
        .collect()
}

/// What the overlay did: the variables applied (by key) and those refused.
#[derive(Debug, Default)]
pub struct Overlay {
    /// (key, variable) for each variable that set a key.
    pub applied: Vec<(String, String)>,
    pub problems: Vec<ConfigError>,
}

/// `config` with every `KEYWARD_*` variable `lookup` finds applied. A refused variable is
/// named in `problems` and leaves its key as it was; the others still apply.
pub fn overlay(
    config: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Overlay), ConfigError> {
    let mut value =
        serde_json::to_value(config).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let mut report = Overlay::default();
    for variable in variables() {
        let set: Vec<(String, String)> = variable
            .names
            .iter()
            .filter_map(|name| lookup(name).map(|v| (name.clone(), v)))
            .collect();
        let (name, text) = match set.as_slice() {
            [] => continue,
            [one] => one.clone(),
            [first, second, ..] => {
                report.problems.push(ConfigError::Env {
                    var: first.0.clone(),
                    message: format!("{} is set too; set only one", second.0),
                });
                continue;
            }
        };
        let mut candidate = value.clone();
        if let Some(slot) = pointer(&mut candidate, &variable.key) {
            *slot = read(&text, &variable.default);
        }
        match serde_json::from_value::<Config>(candidate.clone()) {
            Ok(_) => {
                value = candidate;
                report.applied.push((variable.key.clone(), name));
            }
            Err(e) => report.problems.push(ConfigError::Env {
                var: name,
                message: without_quoted_values(&e.to_string()),
            }),
        }
    }
    let config = serde_json::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok((config, report))
}

fn pointer<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    value.pointer_mut(&format!("/{}", key.replace('.', "/")))
}

/// A variable's text as the JSON of its key's type, told by the default: a list is comma
/// separated, an optional key is unset by an empty value, a number is a number when it reads as
/// one (a duration key also takes `5m`, which stays text for its own parser).
fn read(text: &str, default: &Value) -> Value {
    let text = text.trim();
    match default {
        Value::Array(_) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Value::Null if text.is_empty() => Value::Null,
        Value::Number(_) => text
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| text.parse::<i64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Value::Bool(_) => text
            .parse::<bool>()
            .map(Value::Bool)
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        _ => Value::String(text.to_owned()),
    }
}

/// serde quotes the value it could not use; a variable's value may be a secret.
pub(super) fn without_quoted_values(message: &str) -> String {
    message
        .split('"')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "…" } else { part })
        .collect::<Vec<_>>()
        .join("\"")
        .replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn every_key_has_a_derived_variable_and_the_old_names_still_work() {
        let vars = variables();
        let names = |key: &str| {
            vars.iter()
                .find(|v| v.key == key)
                .unwrap_or_else(|| panic!("{key} has no variable"))
                .names
                .clone()
        };
        assert_eq!(names("cache.ttl_secs"), ["KEYWARD_CACHE_TTL_SECS"]);
        assert_eq!(
            names("tls.check.client_ca"),
            ["KEYWARD_TLS_CHECK_CLIENT_CA"]
        );
        assert_eq!(
            names("listen.check"),
            ["KEYWARD_LISTEN_CHECK", "KEYWARD_CHECK_ADDR"]
        );
        // Optional keys, unset by default, have their variable too.
        assert_eq!(names("tls.admin.cert"), ["KEYWARD_TLS_ADMIN_CERT"]);
        assert_eq!(
            names("credentials.sources"),
            ["KEYWARD_CREDENTIALS_SOURCES", "KEYWARD_CREDENTIAL_SOURCES"]
        );
        for (_, key) in ALIASES {
            assert!(vars.iter().any(|v| v.key == key), "alias for missing {key}");
        }

        for (var, key) in [("KEYWARD_LISTEN_CHECK", "a"), ("KEYWARD_CHECK_ADDR", "b")] {
            let port = if key == "a" { "1" } else { "2" };
            let value = format!("0.0.0.0:{port}");
            let (c, report) =
                overlay(&Config::default(), &|n| (n == var).then(|| value.clone())).unwrap();
            assert_eq!(c.listen.check.port().to_string(), port);
            assert_eq!(
                report.applied,
                [("listen.check".to_owned(), var.to_owned())]
            );
        }
    }

    #[test]
    fn values_are_read_by_the_type_of_their_key() {
        let (c, report) = overlay(
            &Config::default(),
            &env(&[
                ("KEYWARD_CACHE_TTL_SECS", "5m"),
                ("KEYWARD_PROPAGATION_POLL_INTERVAL_MS", " 250 "),
                ("KEYWARD_CREDENTIAL_SOURCES", "x-api-key, ,authorization"),
                ("KEYWARD_TLS_CHECK_CERT", "/tls/c.pem"),
                ("KEYWARD_VERIFY_NICE", "5"),
            ]),
        )
        .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(c.cache.ttl_secs, 300);
        assert_eq!(c.propagation.poll_interval_ms, 250);
        assert_eq!(c.credentials.sources, ["x-api-key", "authorization"]);
        assert_eq!(c.verify.nice, 5);
        assert!(c.tls.check.enabled());

        // An empty value unsets an optional key set by the file.
        let mut file = Config::default();
        file.tls.check.cert = Some("/from/file.pem".into());
        let (c, _) = overlay(&file, &env(&[("KEYWARD_TLS_CHECK_CERT", "")])).unwrap();
        assert_eq!(c.tls.check.cert, None);
    }

    #[test]
    fn every_bad_variable_is_named_and_its_value_never_shown() {
        let (c, report) = overlay(
            &Config::default(),
            &env(&[
                ("KEYWARD_CHECK_ADDR", "hunter2"),
                ("KEYWARD_CACHE_CAPACITY", "lots-hunter2"),
                ("KEYWARD_CACHE_TTL_SECS", "1500ms"),
                ("KEYWARD_USAGE_FLUSH_INTERVAL_SECS", "7"),
                ("KEYWARD_LISTEN_ADMIN", "127.0.0.1:1"),
                ("KEYWARD_ADMIN_ADDR", "127.0.0.1:2"),
            ]),
        )
        .unwrap();
        let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        for var in [
            "KEYWARD_CHECK_ADDR",
            "KEYWARD_CACHE_CAPACITY",
            "KEYWARD_CACHE_TTL_SECS",
            "KEYWARD_LISTEN_ADMIN",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(var)),
                "{var}: {problems:#?}"
            );
        }
        assert!(
            problems.iter().all(|p| !p.contains("hunter2")),
            "{problems:#?}"
        );
        // The good one still applied; the refused ones kept their values.
        assert_eq!(c.usage.flush_interval_secs, 7);
        assert_eq!(c.listen.check, Config::default().listen.check);
        assert_eq!(c.listen.admin, Config::default().listen.admin);
    }
}
