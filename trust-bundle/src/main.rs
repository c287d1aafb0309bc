//! `trust-bundle`: the offline CLI for roots, intermediates, leaf identities and bundles.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the outermost context, then each cause.
            eprintln!("trust-bundle: {e:#}");
            ExitCode::FAILURE
        }
    }
}
