//! Configuration files: `shoal node --config FILE` and `shoal coordinator --config FILE`.
//!
//! A file is TOML whose keys are the command's long flags without the dashes (`data-dir`,
//! `listen`, `join`, ...): every flag is a key, with nothing to keep in step by hand, since
//! the keys and their values are checked against the command's own definition and go through
//! the same parsers as the flags. A flag given on the command line wins over the file's key.
//! A key that repeats (`join`, `peer`) takes an array; a switch takes `true` or `false`.

use crate::failure::{Code, Failure};
use clap::ArgAction;
use std::ffi::OsString;
use std::path::Path;
use toml::de::{DeTable, DeValue};

/// The flag that names the file.
pub const FLAG: &str = "config";

/// One key of a file, with its values as the flag would take them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key: the flag's long name.
    pub key: String,
    /// Its line in the file, from 1.
    pub line: usize,
    /// The values: one per repetition of the flag; a switch set to true has one empty value.
    pub values: Vec<Value>,
}

/// A value of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A string, number or date, as text.
    Text(String),
    /// `true` or `false`.
    Switch(bool),
}

/// A key the command refuses, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Its line in the file, from 1.
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// The largest config file read: a file of flags is a few hundred bytes.
const MAX_BYTES: u64 = 1 << 20;

/// Reads and parses `path`; the failure names the file and the line.
pub fn read(path: &Path) -> Result<Vec<Setting>, Failure> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len > MAX_BYTES {
        return Err(Failure::new(
            Code::Usage,
            format!(
                "{} is {len} bytes: not a config file (they are a few hundred bytes; at most {MAX_BYTES})",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Code::Unreadable,
            format!("cannot read the config file {}: {e}", path.display()),
        )
    })?;
    parse(&text).map_err(|p| {
        Failure::new(
            Code::Usage,
            format!("{}:{}: {}", path.display(), p.line, p.message),
        )
    })
}

/// The settings of a file's text, in file order.
pub fn parse(text: &str) -> Result<Vec<Setting>, Problem> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table = DeTable::parse(text).map_err(|e| Problem {
        line: e.span().map_or(1, |s| line_of(s.start)),
        message: format!("not valid TOML: {}", e.message()),
    })?;
    let mut settings = Vec::new();
    for (key, value) in table.get_ref() {
        let line = line_of(key.span().start);
        let key = key.get_ref().to_string();
        let scalar = |v: &DeValue<'_>| -> Result<Value, String> {
            match v {
                DeValue::String(s) => Ok(Value::Text(s.to_string())),
                DeValue::Integer(i) => Ok(Value::Text(i.as_str().replace('_', ""))),
                DeValue::Float(f) => Ok(Value::Text(f.as_str().replace('_', ""))),
                DeValue::Boolean(b) => Ok(Value::Switch(*b)),
                DeValue::Datetime(d) => Ok(Value::Text(d.to_string())),
                DeValue::Array(_) | DeValue::Table(_) => Err(format!(
                    "`{key}` holds a {}: give a string, number or boolean",
                    v.type_str()
                )),
            }
        };
        let values = match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|v| scalar(v.get_ref()))
                .collect::<Result<Vec<_>, _>>(),
            DeValue::Table(_) => Err(format!(
                "`{key}` is a table: keys go at the top of the file, one per flag"
            )),
            v => scalar(v).map(|v| vec![v]),
        }
        .map_err(|message| Problem { line, message })?;
        settings.push(Setting { key, line, values });
    }
    settings.sort_by_key(|s| s.line);
    Ok(settings)
}

/// What `command` (a subcommand's definition) says of each setting: unknown keys, values its
/// parsers refuse, arrays for flags that take one value.
pub fn check(command: &clap::Command, settings: &[Setting]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for s in settings {
        let problem = |message: String| Problem {
            line: s.line,
            message,
        };
        if s.key == FLAG {
            problems.push(problem(format!(
                "`{FLAG}` cannot be set in a config file: name the file with --{FLAG}"
            )));
            continue;
        }
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(s.key.as_str()))
        else {
            problems.push(problem(unknown(command, &s.key)));
            continue;
        };
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let repeats = matches!(arg.get_action(), ArgAction::Append | ArgAction::Count);
        if s.values.len() != 1 && !repeats {
            problems.push(problem(format!(
                "`{}` takes one value, not an array of {}",
                s.key,
                s.values.len()
            )));
            continue;
        }
        for v in &s.values {
            match (v, switch) {
                (Value::Switch(_), true) => {}
                (_, true) => problems.push(problem(format!(
                    "`{}` is a switch: set it to true or false",
                    s.key
                ))),
                (Value::Switch(b), false) => problems.push(problem(format!(
                    "`{}` takes a value, not {b}: {}",
                    s.key,
                    help(arg)
                ))),
                (Value::Text(t), false) => {
                    if let Some(why) = refusal(arg, t) {
                        problems.push(problem(format!("`{}` = {t:?}: {why}", s.key)));
                    }
                }
            }
        }
    }
    problems
}

/// Why `arg`'s own value parser refuses `text`, if it does. The parser runs on a command that
/// has `arg` alone, so that what the file leaves to other keys or the command line is not
/// asked for here.
fn refusal(arg: &clap::Arg, text: &str) -> Option<String> {
    let alone = clap::Arg::new(arg.get_id().clone())
        .value_parser(arg.get_value_parser().clone())
        .allow_hyphen_values(true)
        .action(ArgAction::Set);
    let e = clap::Command::new("check")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([text])
        .err()?;
    // The first line reads "error: invalid value 'X' for '<ID>': WHY"; WHY is what matters.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    Some(match first.split_once("': ") {
        Some((_, why)) => why.to_string(),
        None => first.trim_start_matches("error: ").to_string(),
    })
}

/// The message for a key `command` does not have, with the likely one.
fn unknown(command: &clap::Command, key: &str) -> String {
    let mut keys: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != FLAG && *l != "help")
        .collect();
    keys.sort_unstable();
    let dashed = key.replace('_', "-");
    let hint = if keys.contains(&dashed.as_str()) {
        format!(" (did you mean `{dashed}`?)")
    } else {
        String::new()
    };
    format!(
        "unknown key `{key}`{hint}: `shoal {}` takes {}",
        command.get_name(),
        keys.join(", ")
    )
}

fn help(arg: &clap::Arg) -> String {
    arg.get_help()
        .map_or_else(|| "see --help".to_string(), ToString::to_string)
}

/// The command-line words for the settings whose flags `given` (the words after the
/// subcommand) does not already have: a flag on the command line wins over the file.
pub fn words(command: &clap::Command, settings: &[Setting], given: &[OsString]) -> Vec<OsString> {
    let on_line = |long: &str| {
        given.iter().any(|w| {
            w.to_str().is_some_and(|w| {
                w.strip_prefix("--")
                    .is_some_and(|rest| rest == long || rest.starts_with(&format!("{long}=")))
            })
        })
    };
    let mut out = Vec::new();
    for s in settings {
        let known = command
            .get_arguments()
            .any(|a| a.get_long() == Some(s.key.as_str()));
        if !known || on_line(&s.key) {
            continue;
        }
        for v in &s.values {
            match v {
                Value::Switch(true) => out.push(format!("--{}", s.key).into()),
                Value::Switch(false) => {}
                Value::Text(t) => {
                    out.push(format!("--{}", s.key).into());
                    out.push(t.into());
                }
            }
        }
    }
    out
}

/// The command line with the settings of `--config FILE` added, when `args` (the whole
/// command line, program name first) runs one of `commands` with `--config`; otherwise
/// `args` as they are. A bad file fails here, naming the file, the line and the key.
pub fn expand(
    root: &clap::Command,
    commands: &[&str],
    args: Vec<OsString>,
) -> Result<Vec<OsString>, Failure> {
    let Some(name) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(args);
    };
    if !commands.contains(&name) {
        return Ok(args);
    }
    let rest = &args[2..];
    let Some(path) = config_path(rest) else {
        return Ok(args);
    };
    let Some(command) = root.find_subcommand(name) else {
        return Ok(args);
    };
    let settings = read(Path::new(&path))?;
    let problems = check(command, &settings);
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{}:{}: {}", Path::new(&path).display(), p.line, p.message))
            .collect();
        return Err(Failure::new(Code::Usage, lines.join("\n")));
    }
    let mut out = args[..2].to_vec();
    out.extend(words(command, &settings, rest));
    out.extend(rest.iter().cloned());
    Ok(out)
}

/// The value of `--config` in `words`, if it is there.
fn config_path(words: &[OsString]) -> Option<OsString> {
    let flag = format!("--{FLAG}");
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let Some(text) = w.to_str() else { continue };
        if text == flag {
            return it.next().cloned();
        }
        if let Some(v) = text.strip_prefix(&format!("{flag}=")) {
            return Some(v.into());
        }
        if text == "--" {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn node() -> Command {
        Command::new("node")
            .arg(Arg::new("data_dir").long("data-dir").required(true))
            .arg(
                Arg::new("listen")
                    .long("listen")
                    .value_parser(clap::value_parser!(std::net::SocketAddr)),
            )
            .arg(Arg::new("join").long("join").action(ArgAction::Append))
            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue))
            .arg(Arg::new(FLAG).long(FLAG))
    }

    #[test]
    fn keys_values_and_lines_are_read_in_order() {
        let text = "# a node\ndata-dir = \"/var/lib/shoal\"\n\njoin = [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\njson = true\nport = 7_000\n";
        let s = parse(text).expect("valid TOML");
        assert_eq!(s[0].key, "data-dir");
        assert_eq!(s[0].line, 2);
        assert_eq!(s[1].line, 4);
        assert_eq!(s[1].values.len(), 2);
        assert_eq!(s[2].values, vec![Value::Switch(true)]);
        assert_eq!(s[3].values, vec![Value::Text("7000".into())]);
    }

    #[test]
    fn unknown_keys_bad_values_and_shapes_are_named_with_their_line() {
        let text = "data_dir = \"/x\"\nlisten = \"nowhere\"\njson = \"yes\"\nlisten2 = 1\ndata-dir = [\"/a\", \"/b\"]\n";
        let problems = check(&node(), &parse(text).expect("valid TOML"));
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5], "{problems:?}");
        assert!(problems[0].message.contains("did you mean `data-dir`"));
        assert!(problems[1].message.contains("\"nowhere\""), "{problems:?}");
        assert!(problems[2].message.contains("switch"));
        assert!(problems[3].message.contains("unknown key `listen2`"));
        assert!(problems[4].message.contains("takes one value"));
    }

    #[test]
    fn invalid_toml_names_its_line() {
        let p = parse("data-dir = \"/x\"\nlisten = \n").expect_err("not TOML");
        assert_eq!(p.line, 2, "{p:?}");
    }

    #[test]
    fn flags_on_the_command_line_win_over_the_file() {
        let text = "data-dir = \"/file\"\njoin = [\"10.0.0.1:7000\"]\njson = true\n";
        let settings = parse(text).expect("valid TOML");
        let given: Vec<OsString> = vec!["--data-dir=/line".into()];
        let words = words(&node(), &settings, &given);
        let words: Vec<&str> = words.iter().map(|w| w.to_str().unwrap()).collect();
        assert_eq!(words, vec!["--join", "10.0.0.1:7000", "--json"]);
    }

    #[test]
    fn the_config_flag_is_found_in_both_spellings() {
        let w = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&w(&["--config", "a.toml"])),
            Some("a.toml".into())
        );
        assert_eq!(
            config_path(&w(&["--x", "--config=b.toml"])),
            Some("b.toml".into())
        );
        assert_eq!(config_path(&w(&["--", "--config", "c"])), None);
    }
}
