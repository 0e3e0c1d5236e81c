//! The `learnsync` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = learnsync::cli::Cli::parse();
    learnsync::cli::init_tracing(&cli.log, cli.log_json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(learnsync::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // One line a person can act on; the details are in the log lines above it.
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
