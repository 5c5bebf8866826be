//! The `keyward` binary as users run it, against a running test server, with one token.

use std::process::Output;

use serde_json::Value;

use super::{KEYWARD_BIN, Keyward};

pub struct Cli<'a> {
    pub keyward: &'a Keyward,
    pub token: String,
}

impl<'a> Cli<'a> {
    pub fn owner(keyward: &'a Keyward) -> Cli<'a> {
        Cli::with_token(keyward, &keyward.owner_token)
    }

    pub fn with_token(keyward: &'a Keyward, token: &str) -> Cli<'a> {
        Cli {
            keyward,
            token: token.to_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(KEYWARD_BIN)
            .args(args)
            .env("KEYWARD_SERVER", format!("http://{}", self.keyward.admin))
            .env("KEYWARD_TOKEN", &self.token)
            .env_remove("KEYWARD_CONFIG")
            .output()
            .unwrap()
    }

    /// Succeeds; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Fails with an error that mentions `needle`, without a panic and without a token.
    pub fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains(&self.keyward.owner_token) && !stderr.contains(&self.token),
            "the token leaked: {stderr}"
        );
    }
}
