//! The whole command line: the CLI's grammar with `bench` added from
//! `bothy-bench`, so that `bothy --help` shows one tool while neither crate
//! depends on the other.

use std::ffi::OsString;

use bothy_bench::{BenchCommand, Verb};
use bothy_cli::{Cli, GlobalArgs};
use clap::{ArgMatches, CommandFactory, FromArgMatches, Subcommand};

/// A parsed command line.
#[derive(Debug)]
pub enum Parsed {
    /// A verb of `bothy-cli`, client or admin.
    Cli(Cli),
    /// `bothy bench ...`, with the global flags that name the daemon.
    Bench(GlobalArgs, BenchCommand),
}

pub fn command() -> clap::Command {
    Verb::augment_subcommands(Cli::command())
}

/// Parses the arguments or exits as `clap::Parser::parse_from` does: 2 on a
/// usage error, 0 after `--help` or `--version`.
pub fn parse(args: Vec<OsString>) -> Parsed {
    let matches = command().get_matches_from(args);
    from_matches(&matches).unwrap_or_else(|e| e.format(&mut command()).exit())
}

fn from_matches(matches: &ArgMatches) -> Result<Parsed, clap::Error> {
    match matches.subcommand_name() {
        Some(name) if Verb::has_subcommand(name) => {
            let Verb::Bench(bench) = Verb::from_arg_matches(matches)?;
            Ok(Parsed::Bench(GlobalArgs::from_arg_matches(matches)?, bench))
        }
        _ => Cli::from_arg_matches(matches).map(Parsed::Cli),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_parse(args: &[&str]) -> Result<Parsed, clap::Error> {
        let matches =
            command().try_get_matches_from(std::iter::once("bothy").chain(args.iter().copied()))?;
        from_matches(&matches)
    }

    #[test]
    fn grammar_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn bench_gets_the_global_flags_before_or_after_it() {
        for args in [
            &["--api", "http://h:1", "bench", "exec", "--runs", "3"][..],
            &["bench", "exec", "--runs", "3", "--api", "http://h:1"][..],
        ] {
            let Ok(Parsed::Bench(global, BenchCommand::Exec(e))) = try_parse(args) else {
                panic!("expected bench exec from {args:?}");
            };
            assert_eq!((global.api.as_deref(), e.runs), (Some("http://h:1"), 3));
        }
    }

    #[test]
    fn client_and_admin_verbs_still_parse() {
        let Ok(Parsed::Cli(cli)) = try_parse(&["--json", "list"]) else {
            panic!("expected a CLI verb");
        };
        assert!(cli.global.json);
        assert!(matches!(
            try_parse(&["daemon"]),
            Ok(Parsed::Cli(Cli {
                command: bothy_cli::Command::Daemon(_),
                ..
            }))
        ));
        assert!(try_parse(&["bench", "exec", "--runs", "0"]).is_err());
        assert!(try_parse(&["nonsense"]).is_err());
    }

    #[test]
    fn help_lists_bench_after_the_client_verbs() {
        let (whole, cli) = (command(), Cli::command());
        assert_eq!(
            whole.get_about(),
            cli.get_about(),
            "adding bench keeps the tool's about"
        );
        assert_eq!(whole.get_long_about(), cli.get_long_about());
        let help = command().render_help().to_string();
        let org = help.find("\n  org ").expect("org listed");
        let bench = help.find("\n  bench ").expect("bench listed");
        assert!(org < bench, "{help}");
        assert!(
            !help.contains("io-worker") && !help.contains("\n  daemon "),
            "{help}"
        );
    }
}
