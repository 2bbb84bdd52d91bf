//! The `lmsi` command line program: sets the allocator (`lmsi::allocator`), parses the command line
//! and dispatches to the command. The arguments are in `cli`, the commands in `commands`, opening
//! the device in `device`, the parsers of numeric options in `numbers`. See `lmsi --help` and the
//! README.

mod cli;
mod commands;
mod device;
mod numbers;

use clap::Parser;

use cli::{Cli, Command};

fn main() {
    lmsi::allocator::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LMSI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {}", error_message(&error));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: the library errors already put the
/// operating system's words in their own message (`config.json: No such file or directory`).
fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => commands::run_loop(*args),
        Command::Generate(args) => commands::generate(args),
        Command::Train(args) => commands::train(args),
        Command::Eval(args) => commands::eval(args),
        Command::Merge(args) => commands::merge(args),
        Command::Vote(args) => commands::vote(args),
        Command::BuildData(args) => commands::build_data(args),
    }
}
