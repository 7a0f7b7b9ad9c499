//! Unit tests for [`super`]: the documented example is the defaults, every key is documented,
//! and mistakes name their key and line.

use super::*;

const EXAMPLE: &str = include_str!("../config/keyward.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn the_example_file_holds_exactly_the_defaults() {
    assert_eq!(parse(EXAMPLE).unwrap(), Config::default());
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn every_commented_example_is_a_valid_setting() {
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    let mut tried = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(setting) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((key, _)) = setting.split_once(" = ") else {
            continue;
        };
        if key.contains(' ') {
            continue;
        }
        let mut edited = lines.clone();
        edited[i] = setting;
        let text = edited.join("\n");
        let config = parse(&text).unwrap_or_else(|e| panic!("uncommented {setting:?}: {e}"));
        assert_ne!(config, Config::default(), "{setting:?} changes nothing");
        tried += 1;
    }
    assert!(tried >= 8, "only {tried} commented settings found");
}

#[test]
fn every_key_is_documented_in_the_example() {
    let value = serde_json::to_value(Config::default()).unwrap();
    let mut section = "";
    let mut documented = Vec::new();
    for line in EXAMPLE.lines() {
        let line = line.trim_start_matches("# ");
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if let Some((key, _)) = line.split_once(" = ") {
            documented.push(format!("{section}.{key}"));
        }
    }
    for (section, keys) in value.as_object().unwrap() {
        for key in keys.as_object().unwrap().keys() {
            let name = format!("{section}.{key}");
            assert!(
                documented.contains(&name),
                "{name} is not in config/keyward.toml"
            );
        }
    }
}

#[test]
fn an_unknown_key_names_the_key_and_the_line() {
    let err = parse("[store]\nenabled = true\npasphrase_file = \"/x\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("test.toml:3: "), "{text}");
    assert!(text.contains("pasphrase_file"), "{text}");
    let err = parse("[log]\nlevel = \"info\"\n\n[stor]\n").unwrap_err();
    assert!(err.to_string().starts_with("test.toml:4: "), "{err}");
    assert!(err.to_string().contains("stor"), "{err}");
}

#[test]
fn bad_values_name_the_line() {
    for (text, line, needle) in [
        ("[agent]\nlifetime = \"5 parsecs\"\n", 2, "invalid time"),
        ("[agent]\n\nsocket = \"relative.sock\"\n", 3, "absolute"),
        ("[renewal]\nrenew_before = \"400d\"\n", 2, "365d"),
        ("[audit]\nmax_events = 0\n", 2, "max_events"),
        ("[log]\nlevel = \"[[[\"\n", 2, "log filter"),
        ("[store]\nenabled = \"yes\"\n", 2, "bool"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("test.toml:{line}: ")),
            "{text:?}: {err}"
        );
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn values_are_read() {
    let config = parse(
        "[agent]\nlifetime = \"1h30m\"\nsocket = \"/run/k/a.sock\"\n[renewal]\nrenew_before = \"7d\"\nrekey = true\n",
    )
    .unwrap();
    assert_eq!(
        config.agent.lifetime,
        Some(HumanDuration(Duration::from_secs(5400)))
    );
    assert_eq!(
        config.agent.socket,
        Some(ConfigPath("/run/k/a.sock".into()))
    );
    assert_eq!(
        config.renewal.renew_before.0,
        Duration::from_secs(7 * 86_400)
    );
    assert!(config.renewal.rekey);
}

#[test]
fn passphrase_file_and_credential_exclude_each_other() {
    let err = parse("[store]\npassphrase_file = \"/p\"\ncredential = \"c\"\n").unwrap_err();
    assert!(matches!(err, ConfigError::Conflict { .. }), "{err}");
    let config = parse("[store]\npassphrase_file = \"/p\"\n").unwrap();
    assert_eq!(
        config.passphrase_file(Path::new("x")).unwrap(),
        Some(PathBuf::from("/p"))
    );
}

#[test]
fn lines_are_counted_from_one() {
    assert_eq!(line_of("a\nb\nc", 0), 1);
    assert_eq!(line_of("a\nb\nc", 2), 2);
    assert_eq!(key_line("[a]\n  x = 1\nxy = 2\n", "xy"), 3);
}
