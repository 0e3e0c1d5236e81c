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
    let slice = match &cli.command {
        learnsync::cli::Command::Serve(config) if config.sched_slice_us > 0 => {
            Some(config.sched_slice_us.saturating_mul(1_000))
        }
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(slice) = slice {
        // The runtime's threads, and this one, which runs the accept loop in `block_on`.
        builder.on_thread_start(move || ask_for_short_slices(slice));
        ask_for_short_slices(slice);
    }
    let runtime = match builder.build() {
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

/// Asks Linux's scheduler (EEVDF, 6.12 and later) for a short slice on the calling thread.
///
/// The thread keeps its fair share of CPU; what changes is when it runs. A thread with a
/// short slice has an earlier deadline, so when a device's message wakes it while the
/// database or another process holds the core, it preempts them instead of waiting for their
/// slice to end (the kernel's default slice: 1.4 ms on these two cores, about 3 ms on
/// larger machines). With the server, PostgreSQL and 10,000 devices' load on
/// two cores, those waits were the tail of P1 (`perf sched`: wake-ups of the runtime's
/// threads waited up to 9.5 ms; BENCHMARKS.md, 2026-12-05). The thread keeps its policy
/// (`SCHED_FLAG_KEEP_POLICY`: a real-time or batch thread stays one; on a real-time thread
/// the call fails) and its nice value. Older kernels ignore the request or refuse it; either
/// way nothing else changes, so a refusal is only logged at debug level.
fn ask_for_short_slices(slice_ns: u64) {
    #[cfg(target_os = "linux")]
    {
        /// `sched_setattr(2)`: keep the thread's scheduling policy (Linux 5.3 and later).
        const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;
        /// `struct sched_attr` of `sched_setattr(2)`, in its first published size.
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            sched_policy: u32,
            sched_flags: u64,
            sched_nice: i32,
            sched_priority: u32,
            sched_runtime: u64,
            sched_deadline: u64,
            sched_period: u64,
        }
        const _: () = assert!(
            std::mem::size_of::<SchedAttr>() == 48,
            "SCHED_ATTR_SIZE_VER0"
        );
        // `sched_setattr` sets the nice value too: keep the one the server was started with.
        // SAFETY: getpriority takes two integers and touches no memory of ours.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }.clamp(-20, 19);
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: SCHED_FLAG_KEEP_POLICY,
            sched_nice: nice,
            sched_priority: 0,
            sched_runtime: slice_ns,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: `attr` is a valid, initialised `sched_attr` of the size it declares, alive
        // for the call; pid 0 is the calling thread; the kernel only reads it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0 as libc::pid_t,
                &raw const attr,
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "the scheduler refused a short slice (only latency depends on it)"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slice_ns;
}

#[cfg(test)]
mod tests {
    use super::MI_OPTION_PURGE_DELAY;

    /// The slice reaches the scheduler (where the kernel shows it) and the thread's nice
    /// value survives the call.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_gets_the_slice_asked_for_and_keeps_its_nice_value() {
        use super::ask_for_short_slices;
        let (slice, nice, expected) = std::thread::spawn(|| {
            // SAFETY: setpriority/getpriority take integers only; pid 0 is this thread.
            let expected = (unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } + 3).min(19);
            // SAFETY: as above.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, expected) };
            assert_eq!(rc, 0, "could not lower this thread's priority");
            ask_for_short_slices(250_000);
            let sched = std::fs::read_to_string("/proc/thread-self/sched").unwrap_or_default();
            let slice = sched
                .lines()
                .find(|l| l.starts_with("se.slice"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<u64>().ok());
            // SAFETY: as above.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            (slice, nice, expected)
        })
        .join()
        .expect("the thread ran");
        assert_eq!(nice, expected, "the nice value was reset");
        // Kernels whose `/proc/<tid>/sched` shows no `se.slice` are not checked; where it is
        // shown (Linux 6.14 and later), custom slices are honoured.
        if let Some(slice) = slice {
            assert_eq!(slice, 250_000, "the slice was not applied");
        }
    }

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
