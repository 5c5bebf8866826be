//! `examples/keyward.toml` is a configuration keyward's own loader accepts, it equals the
//! defaults (as it says), its commented-out keys are real keys too, and it names every key of
//! the README's configuration reference.

use std::path::PathBuf;

use keyward::config::Config;

fn example() -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/keyward.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[test]
fn the_example_configuration_loads_and_equals_the_defaults() {
    let (path, _) = example();
    let mut config = Config::from_file(&path).expect("examples/keyward.toml parses");
    config.validate().expect("examples/keyward.toml validates");
    assert_eq!(
        format!("{config:?}"),
        format!("{:?}", Config::default()),
        "the example says it holds the defaults"
    );
}

/// `# key = value` lines are keys shown commented out: uncommented, they must parse too (an
/// unknown key is an error), so the example never documents a key keyward does not read.
#[test]
fn the_commented_out_keys_are_real_keys() {
    let (_, text) = example();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(uncommented, text, "some keys are shown commented out");
    let mut config = Config::from_toml(&uncommented).expect("uncommented keys parse");
    config.validate().expect("uncommented keys validate");
    assert!(config.listen.check_unix.is_some());
}

/// Every key of the README's "Configuration reference" table is in the example, under its
/// section, with its environment variable beside it.
#[test]
fn the_example_names_every_key_and_its_variable() {
    let (_, text) = example();
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let (_, reference) = readme
        .split_once("## Configuration reference")
        .expect("README has a configuration reference");
    let mut keys = 0;
    for row in reference.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, vars) = (cells[1], cells[2]);
        let names: Vec<&str> = names.trim_matches('`').split("` / `").collect();
        let (section, first) = names[0].split_once('.').unwrap();
        let section_text = text
            .split_once(&format!("\n[{section}]\n"))
            .unwrap_or_else(|| panic!("no [{section}] in the example"))
            .1
            .split("\n[")
            .next()
            .unwrap();
        for key in std::iter::once(first).chain(names[1..].iter().copied()) {
            assert!(
                section_text.contains(&format!("\n{key} = "))
                    || section_text.contains(&format!("\n# {key} = ")),
                "{section}.{key} is not in the example"
            );
            keys += 1;
        }
        let var = vars.trim_matches('`').split('`').next().unwrap();
        assert!(
            section_text.contains(var),
            "{var} is not named in [{section}]"
        );
    }
    assert!(keys >= 19, "{keys} keys found in the README table");
}
