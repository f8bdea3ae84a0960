#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    vipgate::verbs::run(vipgate::verbs::Cli::parse())
}
