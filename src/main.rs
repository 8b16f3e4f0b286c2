//! The `tidemark` binary: parse arguments, call the library, map the error to its exit code.

use std::process::ExitCode;

use clap::Parser;
use tidemark::cli::{Cli, execute};
use tidemark::error::exit_code;

// Loading and diffing allocate and free many large Arrow buffers; the system allocator returns
// them to the kernel and faults them in again (a third of a 10M-row run was system time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's `mi_option_purge_delay` (option 15 in mimalloc.h, v2 and v3; the Rust bindings
// leave it out): how long freed memory stays with the process before it goes back to the
// kernel. A snapshot streamed in 16 MB pieces frees and allocates the same amount again every
// few milliseconds; returned after the default 10 ms, it was faulted in and zeroed again by
// the kernel for every piece (a fifth of a run's time on this machine's VM).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

fn main() -> ExitCode {
    // The allocator's own variable, when set, is the user's choice.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the allocator this binary links; no memory
        // is touched, and any value is valid for it.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    restore_default_sigpipe();
    std::panic::set_hook(Box::new(|info| {
        // A damaged file that makes a third-party reader panic is reported as that file's error.
        if !tidemark::error::parsing_untrusted() {
            eprintln!(
                "tidemark: internal error, please report it with the command you ran: {info}"
            );
        }
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit_code::INVALID
            } else {
                exit_code::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::FAILED);
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(execute(cli))
    }));
    match outcome {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(_) => ExitCode::from(exit_code::FAILED),
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "tidemark={default},{}",
            if verbose > 2 { "debug" } else { "warn" }
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // With -vv every line carries the seconds since start, which shows where the time goes.
    if verbose >= 2 {
        builder
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .init();
    } else {
        builder.without_time().init();
    }
}

/// `tidemark query ... | head` must end quietly when the reader goes away, as other command-line
/// tools do; Rust ignores SIGPIPE by default, which turns that into a write error on stdout.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
