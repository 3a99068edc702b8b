//! The command lines scripts type most, read without clap: `run [OPTIONS]
//! -- CMD...`, `wait`, `show`, `stop`, `ps` and `logs`, with long options
//! only. clap's parser took 0.4 to 0.6 ms of each of these commands, from
//! `main` to the runtime (`bpm wait` 0.40 ms, `bpm run` 0.63 ms; `perf
//! probe` on the release build), nearly half of what `setsid -f` takes in
//! all. Read here, 0.06 ms.
//!
//! clap stays the definition of the command line. Anything this does not
//! know, or anything unusual in what it knows (a short option, `--help`, a
//! value that is empty, starts with `-` or is not UTF-8, an option given
//! twice, a number that does not parse), goes to clap, which reads it or
//! explains what is wrong. A test holds that whatever this reads, clap
//! reads the same.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::{Cli, Command, LogsArgs, PsArgs, RunArgs, StopArgs};

/// What a long option takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// Nothing: a flag.
    Nothing,
    /// One value, at most once.
    One,
    /// One value each time, repeatable.
    Many,
}

/// The long options read here, per command: a subset of clap's, chosen from
/// the options with no `requires` or `conflicts_with`, whose value is text
/// or (`wait --timeout`, `stop --grace`) a number of seconds.
fn options(command: &str) -> Option<&'static [(&'static str, Takes)]> {
    use Takes::{Many, Nothing, One};
    Some(match command {
        "run" => &[
            ("name", One),
            ("kind", One),
            ("group", One),
            ("session", One),
            ("parent", One),
            ("cwd", One),
            ("env", Many),
            ("label", Many),
            ("after", Many),
            ("timeout", One),
            ("grace", One),
            ("restart", One),
            ("delay", One),
            ("json", Nothing),
            ("wait", Nothing),
            ("ensure", Nothing),
            ("replace", Nothing),
            ("persist", Nothing),
            ("shell", Nothing),
            ("clean-env", Nothing),
        ],
        "wait" => &[
            ("label", Many),
            ("session", One),
            ("project", One),
            ("timeout", One),
            ("any", Nothing),
        ],
        "show" => &[("json", Nothing)],
        "stop" => &[
            ("force", Nothing),
            ("grace", One),
            ("session", One),
            ("all", Nothing),
            ("all-runs", Nothing),
        ],
        "ps" => &[
            ("all", Nothing),
            ("state", Many),
            ("session", One),
            ("node", One),
            ("parent", One),
            ("label", Many),
            ("project", One),
            ("kind", One),
            ("tree", Nothing),
            ("json", Nothing),
        ],
        "logs" => &[("follow", Nothing), ("stream", One)],
        _ => return None,
    })
}

/// The options given, in order, as their names and values (empty for a flag).
struct Given(Vec<(&'static str, String)>);

impl Given {
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| *n == name)
    }

    fn one(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn many(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A number, as clap reads one (`FromStr`); `Err` when it is not one,
    /// for clap to explain.
    fn number(&self, name: &str) -> Result<Option<f64>, ()> {
        self.one(name)
            .map(|v| v.parse::<f64>().map_err(|_| ()))
            .transpose()
    }
}

/// Reads `args` (the program's name first) when it is a line read here;
/// `None` sends it to clap. `env_home` is `BPM_HOME`, as clap would read it.
pub(super) fn parse(args: &[OsString], env_home: Option<&OsStr>) -> Option<Cli> {
    let mut home: Option<String> = None;
    let mut command: Option<(&str, &'static [(&'static str, Takes)])> = None;
    let mut given = Given(Vec::new());
    let mut positional: Vec<String> = Vec::new();
    let mut trailing: Option<Vec<OsString>> = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let text = arg.to_str()?;
        if text == "--" {
            // Only `run` takes what follows `--` (its command, as it is).
            if !matches!(command, Some(("run", _))) {
                return None;
            }
            trailing = Some(rest.cloned().collect());
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let (name, takes) = if name == "home" {
                ("home", Takes::One)
            } else {
                *command?.1.iter().find(|(n, _)| *n == name)?
            };
            let value = if takes == Takes::Nothing {
                if inline.is_some() {
                    return None;
                }
                String::new()
            } else {
                let value = match inline {
                    Some(value) => value,
                    None => rest.next()?.to_str()?,
                };
                if value.is_empty() || value.starts_with('-') {
                    return None;
                }
                value.to_owned()
            };
            if name == "home" {
                if home.replace(value).is_some() {
                    return None;
                }
            } else {
                if takes != Takes::Many && given.flag(name) {
                    return None;
                }
                given.0.push((name, value));
            }
            continue;
        }
        if text.is_empty() || text.starts_with('-') {
            return None;
        }
        match command {
            None => command = Some((text, options(text)?)),
            Some(_) => positional.push(text.to_owned()),
        }
    }
    let home = match (home, env_home) {
        (Some(home), _) => Some(PathBuf::from(home)),
        // How clap takes an empty variable is its own affair.
        (None, Some(env)) if env.is_empty() => return None,
        (None, env) => env.map(PathBuf::from),
    };
    let command = build(command?.0, &given, positional, trailing)?;
    Some(Cli { home, command })
}

/// The command clap would build from the same line. `trailing` is what
/// followed `--`, which [`parse`] takes for `run` alone.
fn build(
    name: &str,
    given: &Given,
    positional: Vec<String>,
    trailing: Option<Vec<OsString>>,
) -> Option<Command> {
    Some(match name {
        "run" => {
            let command = trailing.filter(|c| !c.is_empty())?;
            if !positional.is_empty() {
                return None;
            }
            Command::Run(Box::new(RunArgs {
                name: given.one("name"),
                kind: given.one("kind"),
                group: given.one("group"),
                session: given.one("session"),
                parent: given.one("parent"),
                cwd: given.one("cwd").map(PathBuf::from),
                env: given.many("env").into_iter().map(OsString::from).collect(),
                label: given.many("label"),
                after: given.many("after"),
                timeout: given.one("timeout"),
                grace: given.one("grace"),
                restart: given.one("restart"),
                delay: given.one("delay"),
                json: given.flag("json"),
                wait: given.flag("wait"),
                ensure: given.flag("ensure"),
                replace: given.flag("replace"),
                persist: given.flag("persist"),
                shell: given.flag("shell"),
                clean_env: given.flag("clean-env"),
                command,
                ..RunArgs::default()
            }))
        }
        "wait" if !positional.is_empty() => Command::Wait {
            ids: positional,
            label: given.many("label"),
            session: given.one("session"),
            project: given.one("project"),
            timeout: given.number("timeout").ok()?,
            any: given.flag("any"),
        },
        "show" if positional.len() == 1 => Command::Show {
            id: positional.into_iter().next()?,
            json: given.flag("json"),
        },
        "stop" => Command::Stop(StopArgs {
            ids: positional,
            force: given.flag("force"),
            grace: given.number("grace").ok()?,
            session: given.one("session"),
            all: given.flag("all"),
            level: None,
            all_runs: given.flag("all-runs"),
        }),
        "ps" if positional.is_empty() => Command::Ps(PsArgs {
            all: given.flag("all"),
            state: given.many("state"),
            session: given.one("session"),
            node: given.one("node"),
            parent: given.one("parent"),
            label: given.many("label"),
            project: given.one("project"),
            kind: given.one("kind"),
            tree: given.flag("tree"),
            level: None,
            json: given.flag("json"),
        }),
        "logs" if positional.len() == 1 => Command::Logs(LogsArgs {
            id: positional.into_iter().next(),
            follow: given.flag("follow"),
            lines: None,
            stream: given.one("stream").unwrap_or_else(|| "both".to_owned()),
            since: None,
            grep: None,
            archived: false,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use proptest::prelude::*;

    fn line(words: &[&str]) -> Vec<OsString> {
        std::iter::once("bpm")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// What this reads, clap reads the same; what it does not, clap gets.
    fn check(args: &[OsString]) -> bool {
        let env_home = std::env::var_os("BPM_HOME");
        let Some(fast) = parse(args, env_home.as_deref()) else {
            return false;
        };
        match Cli::try_parse_from(args) {
            Ok(clap) => assert_eq!(
                format!("{fast:?}"),
                format!("{clap:?}"),
                "read differently: {args:?}"
            ),
            Err(e) => panic!("read here, refused by clap: {args:?}: {e}"),
        }
        true
    }

    #[test]
    fn the_lines_scripts_type_are_read_here_as_clap_reads_them() {
        for words in [
            &["run", "--", "sleep", "1"][..],
            &["run", "--name", "web", "--json", "--", "npm", "run", "dev"],
            &[
                "--home",
                "/tmp/h",
                "run",
                "--label=a=b",
                "--label",
                "c=d",
                "--",
                "x",
            ],
            &[
                "run",
                "--home=/h",
                "--env",
                "A=1",
                "--cwd",
                "/tmp",
                "--",
                "sh",
                "-c",
                "",
            ],
            &[
                "run",
                "--wait",
                "--restart",
                "on-failure",
                "--",
                "make",
                "--help",
            ],
            &[
                "run",
                "--clean-env",
                "--ensure",
                "--replace",
                "--",
                "a",
                "--",
                "b",
            ],
            &["wait", "0123", "abcd"],
            &["wait", "web", "--timeout", "2.5", "--any"],
            &["wait", "web", "--timeout=1e3"],
            &["show", "web"],
            &["show", "--json", "web"],
            &["stop", "a", "b", "--grace", "3"],
            &["stop", "--all", "--force"],
            &["stop"],
            &["ps"],
            &[
                "ps", "--all", "--json", "--state", "running", "--state", "failed",
            ],
            &["logs", "web"],
            &["logs", "web", "--stream", "stderr", "--follow"],
        ] {
            assert!(check(&line(words)), "not read here: {words:?}");
        }
    }

    #[test]
    fn unusual_lines_go_to_clap() {
        for words in [
            &[][..],
            &["run"],
            &["run", "--"],
            &["run", "sleep", "1"],
            &["run", "--name", "-x", "--", "y"],
            &["run", "--name=", "--", "y"],
            &["run", "--name", "a", "--name", "b", "--", "y"],
            &["run", "--json=true", "--", "y"],
            &["run", "--tty", "--", "y"],
            &["run", "-h"],
            &["run", "--help"],
            &["--version"],
            &["wait"],
            &["wait", "--", "x"],
            &["wait", "x", "--timeout", "soon"],
            &["show"],
            &["show", "a", "b"],
            &["ps", "x"],
            &["ps", "-a"],
            &["logs", "x", "-f"],
            &["logs", "x", "--lines", "5"],
            &["daemon", "status"],
            &["up"],
            &["--name", "x", "run", "--", "y"],
            &["--home", "a", "--home", "b", "ps"],
        ] {
            assert!(parse(&line(words), None).is_none(), "read here: {words:?}");
        }
        let not_utf8: OsString = std::os::unix::ffi::OsStringExt::from_vec(vec![b'a', 0xff]);
        let mut args = line(&["show"]);
        args.push(not_utf8.clone());
        assert!(parse(&args, None).is_none());
        // After `--`, run's command is taken as it is, bytes and all.
        let mut args = line(&["run", "--", "echo"]);
        args.push(not_utf8);
        assert!(check(&args));
        // An empty BPM_HOME goes to clap.
        assert!(parse(&line(&["ps"]), Some(OsStr::new(""))).is_none());
        assert!(parse(&line(&["ps"]), Some(OsStr::new("/h"))).is_some());
    }

    const COMMANDS: &[&str] = &["run", "wait", "show", "stop", "ps", "logs", "up"];
    /// Values and words, the awkward ones included.
    const VALUES: &[&str] = &[
        "web", "0123", "k=v", "1.5", "2", "1e3", "inf", "NaN", "soon", "/tmp", "stderr", "-x", "-",
        "", "a b", "=", "--", "run", "--help", "-h", "--home", "--bogus",
    ];

    /// A value: a plain one mostly (the first ten), an awkward one sometimes.
    fn value() -> impl Strategy<Value = usize> {
        prop_oneof![3 => 0..10usize, 1 => 0..VALUES.len()]
    }

    /// One word or option of a generated line, by what it is.
    fn item(command: &str, kind: usize, option: usize, value: usize, form: usize) -> Vec<String> {
        let value = VALUES[value].to_owned();
        // Options of this command mostly, of another one sometimes.
        let table = options(if kind == 3 { "run" } else { command }).unwrap_or(&[]);
        match kind {
            0 | 3 if !table.is_empty() => {
                let (name, takes) = table[option % table.len()];
                // `--name=value`, `--name` alone (a value missing, for an
                // option), or `--name value`.
                match (takes, form) {
                    (_, 0) => vec![format!("--{name}={value}")],
                    (Takes::Nothing, _) | (_, 1) => vec![format!("--{name}")],
                    _ => vec![format!("--{name}"), value],
                }
            }
            1 => vec!["--home".to_owned(), value],
            _ => vec![value],
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8000))]
        #[test]
        fn whatever_is_read_here_clap_reads_the_same(
            home_first in any::<bool>(),
            command in 0..COMMANDS.len(),
            items in proptest::collection::vec((0..5usize, 0..40usize, value(), 0..4usize), 0..6),
            trailing in proptest::option::of(proptest::collection::vec(value(), 0..3)),
        ) {
            let command = COMMANDS[command];
            let mut words: Vec<String> = Vec::new();
            if home_first {
                words.extend(["--home".to_owned(), "/h".to_owned()]);
            }
            words.push(command.to_owned());
            for (kind, option, value, form) in items {
                words.extend(item(command, kind, option, value, form));
            }
            if let Some(trailing) = trailing {
                words.push("--".to_owned());
                words.extend(trailing.into_iter().map(|v| VALUES[v].to_owned()));
            }
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            check(&line(&words));
        }
    }
}
