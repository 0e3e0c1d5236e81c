//! The `learnsync` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's allocator: every password hash (argon2id) allocates 19 MiB, and
/// glibc keeps that memory after a burst of registrations or logins — measured by `bench
/// connections`: 2,000 accounts left ~1 GiB resident (517 KiB per device once idle); with
/// mimalloc it goes back to the system (41.5 KiB per device). See BENCHMARKS.md, P3.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
