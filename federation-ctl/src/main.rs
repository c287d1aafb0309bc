//! `federation-ctl`: the per-cluster controller (`federation-ctl controller`) and the operator
//! verbs that talk to it over its local API.

use std::process::ExitCode;

use clap::Parser;
use federation_ctl::cli::{self, Args, Command};

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Command::Controller { config } => cli::controller::run(&config).await,
            Command::Crds => cli::print_crds(),
            verb => cli::run_verb(verb, args.controller.as_deref(), args.output).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
