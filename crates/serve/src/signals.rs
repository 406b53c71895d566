//! The two-signal shutdown every binary uses: the first SIGTERM or SIGINT starts a graceful drain (the
//! future returned by [`shutdown_on_signal`] resolves, and the caller stops accepting and lets in-flight
//! requests finish); a second one exits the process at once with status 130. It sits between the operating
//! system and each binary's accept loop.
//!
//! The handlers are installed when [`shutdown_on_signal`] is called, not when its future is first polled, so
//! a signal that arrives while the process is still starting up is a graceful stop rather than the default
//! "terminate now". Other signals a binary uses (the gateway's SIGUSR2 upgrade and SIGHUP log reopen) are
//! separate streams and are not touched here.

use std::future::Future;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The exit status after a second signal (what a shell reports for an interrupted command).
pub const EXIT_ON_SECOND_SIGNAL: i32 = 130;

#[derive(Debug, thiserror::Error)]
#[error("cannot install the {signal} handler: {source}")]
pub struct SignalError {
    pub signal: &'static str,
    pub source: std::io::Error,
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on the first of them;
/// from then on a task waits for the second and exits the process. Must be called inside a runtime.
pub fn shutdown_on_signal() -> Result<impl Future<Output = ()>, SignalError> {
    let term = signal(SignalKind::terminate()).map_err(|source| SignalError { signal: "SIGTERM", source })?;
    let int = signal(SignalKind::interrupt()).map_err(|source| SignalError { signal: "SIGINT", source })?;
    Ok(async move {
        let (mut term, mut int) = (term, int);
        let name = next(&mut term, &mut int).await;
        tracing::info!("{name}: draining; shutting down once in-flight requests finish (send it again to exit now)");
        tokio::spawn(async move {
            let name = next(&mut term, &mut int).await;
            tracing::warn!("second signal ({name}): exiting without waiting");
            std::process::exit(EXIT_ON_SECOND_SIGNAL);
        });
    })
}

async fn next(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
