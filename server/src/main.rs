//! The `learnsync` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = learnsync::cli::Cli::parse();
    learnsync::cli::init_tracing(&cli.log, cli.log_json);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(learnsync::cli::run(cli))?;
    Ok(())
}
