//! The `learnsync` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's allocator: every password hash (argon2id) allocates 19 MiB, and
/// glibc keeps that memory after a burst of registrations or logins — measured by `bench
/// connections`: 2,000 accounts left ~1 GiB resident (517 KiB per device once idle); with
/// mimalloc it goes back to the system (41.5 KiB per device). See BENCHMARKS.md, P3.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in `mi_option_e` of the mimalloc 3 that
/// `libmimalloc-sys` 0.1.49 builds; the crate exports no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed pages wait before they go back to the system, in ms: 10 instead of
/// mimalloc's 1,000. With the default, a server gone quiet kept resident what its last burst
/// freed (4–6 KiB per idle device at 2,000 devices; see BENCHMARKS.md, P3). Returning them at
/// once (0) cost latency: each free of a page span became a system call on the path of a
/// change, and the page a fault and a zeroing when used again (P1 at 10,000 devices: p50 and
/// p99 worse in each of five runs side by side with 10 ms). At 10 ms the memory goes back as
/// well (P3 at 6,000 devices: no more resident per device than at 0).
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets [`PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY` in the environment says otherwise.
///
/// Only for `serve`: a batch command (an import) frees and reallocates the same memory all the
/// time, and with it returned early the kernel zeroed each page again on reuse (4,000-dump
/// import 7% slower at 0; see BENCHMARKS.md, P5). It exits soon and gives everything back then.
fn purge_freed_memory_soon() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called in `main` before any other thread exists (the function is not
        // thread-safe); it only stores the option's value.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Turns transparent huge pages off for a batch command (an import, a backup) unless
/// `MIMALLOC_ALLOW_THP` in the environment asks for mimalloc's default.
///
/// mimalloc asks the kernel for huge pages on its arenas, and the kernel then zeroes 2 MiB at
/// the first touch of each; an import frees and reallocates all the time, so purged memory
/// kept coming back as fresh 2 MiB faults. Measured side by side (BENCHMARKS.md, 2026-12-04
/// third session): a 10,000-dump import on SQLite spent 5% of its CPU zeroing those pages and
/// ran about 6% faster without them (medians of five pairs), with 8–10% less memory. `serve`
/// keeps them: without, P1 at 10,000 devices was worse in two of three pairs (p99 207 and
/// 137 ms against 12.4 and 17.8; the third 27.5 against 73.8), too unsure a trade for the
/// 2–3 KiB per idle device it saved at 6,000 devices (P3). The prctl covers the whole process,
/// SQLite's own allocations too (and the `pg_dump` a backup starts, which inherits it).
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes four integer arguments and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            // Only speed and memory depend on it; say so and go on.
            eprintln!(
                "warning: could not turn transparent huge pages off: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn main() -> ExitCode {
    let cli = learnsync::cli::Cli::parse();
    if matches!(cli.command, learnsync::cli::Command::Serve(_)) {
        purge_freed_memory_soon();
    } else {
        no_transparent_huge_pages();
    }
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

#[cfg(test)]
mod tests {
    use super::MI_OPTION_PURGE_DELAY;

    /// The option's index is written by hand; an upgrade of mimalloc that renumbers its options
    /// would silently set another one. `purge_delay` is the only option whose default is 1000.
    #[test]
    fn the_option_set_at_start_is_the_purge_delay() {
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        // SAFETY: reading an option has no precondition.
        let got = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            got, expected,
            "option {MI_OPTION_PURGE_DELAY} is not mimalloc's purge_delay any more: fix MI_OPTION_PURGE_DELAY"
        );
    }
}
