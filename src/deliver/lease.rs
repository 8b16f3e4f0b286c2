//! One delivery at a time to a destination whose state is kept in the store (an HTTP API):
//! the delivery holds a lease, the file `lease.json` in the destination's folder, created only
//! if absent and renewed while it runs. Two deliveries at once would send the same rows twice
//! and write the same state files over each other.
//!
//! A lease whose holder is gone is taken over: at once when the holder was a process of this
//! machine that no longer runs (a kill -9), otherwise once it has not been renewed for
//! [`STALE_AFTER`]. Should two processes still both believe they hold it (one of them frozen
//! for longer than that), the state files are created only if absent, so the second writer of
//! a file stops (see [`super::http`]'s journal).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;

/// How often a held lease is written again.
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// A lease not renewed for this long belongs to a delivery that is gone.
const STALE_AFTER: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Holder {
    /// This lease's own id, so that a holder never removes another's.
    id: String,
    host: String,
    pid: u32,
    since: DateTime<Utc>,
    renewed: DateTime<Utc>,
}

/// A held lease; [`Lease::release`] gives it up (a lease dropped unreleased stops renewing and
/// goes stale).
pub struct Lease {
    store: Store,
    table: String,
    relative: String,
    id: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}

impl Lease {
    /// Take the lease of `<table>/<folder>` for `what` (named in the log when a stale lease
    /// is taken over); held by another delivery: an error (exit 5), nothing done.
    pub async fn take(store: &Store, table: &str, folder: &str, what: &str) -> Result<Lease> {
        let relative = format!("{folder}/lease.json");
        let now = Utc::now();
        let mine = Holder {
            id: uuid::Uuid::new_v4().simple().to_string(),
            host: host_name(),
            pid: std::process::id(),
            since: now,
            renewed: now,
        };
        // Twice at most: a stale lease is removed, then created again as this one.
        for _ in 0..2 {
            if store
                .create_record(table, &relative, to_json(&mine)?)
                .await?
            {
                let renewing = tokio::spawn(renew(
                    store.clone(),
                    table.to_string(),
                    relative.clone(),
                    mine.clone(),
                ));
                return Ok(Lease {
                    store: store.clone(),
                    table: table.to_string(),
                    relative,
                    id: mine.id,
                    renewing,
                });
            }
            let Some(held) = read(store, table, &relative).await? else {
                continue;
            };
            if let Some(why) = held_by_no_one(&held) {
                tracing::warn!(
                    "{table}: taking over the lease of {what} from process {} on {} ({why})",
                    held.pid,
                    held.host
                );
                store.remove_record(table, &relative).await?;
                continue;
            }
            return Err(Error::Destination {
                message: format!(
                    "another delivery to it is under way (process {} on {}, since {}), so this one sent nothing; its lease {} is given up when it ends, and taken over {} s after it was last renewed if it is cut off",
                    held.pid,
                    held.host,
                    held.since.format("%Y-%m-%d %H:%M:%S UTC"),
                    store.file_url(table, &relative),
                    STALE_AFTER.as_secs()
                ),
            });
        }
        Err(Error::Destination {
            message: format!(
                "another delivery took its lease {} as this one tried to, so this one sent nothing",
                store.file_url(table, &relative)
            ),
        })
    }

    /// Give the lease up (if it is still this one's).
    pub async fn release(self) -> Result<()> {
        self.renewing.abort();
        match read(&self.store, &self.table, &self.relative).await? {
            Some(held) if held.id == self.id => {
                self.store.remove_record(&self.table, &self.relative).await
            }
            _ => Ok(()),
        }
    }
}

/// Why `held` belongs to a delivery that is gone, if it does.
fn held_by_no_one(held: &Holder) -> Option<String> {
    if held.host == host_name() && held.pid != std::process::id() && !process_runs(held.pid) {
        return Some("that process no longer runs".to_string());
    }
    let quiet = (Utc::now() - held.renewed).to_std().unwrap_or_default();
    (quiet >= STALE_AFTER).then(|| format!("not renewed for {} s", quiet.as_secs()))
}

async fn renew(store: Store, table: String, relative: String, mut mine: Holder) {
    let mut every = tokio::time::interval(RENEW_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        mine.renewed = Utc::now();
        let still_mine =
            matches!(read(&store, &table, &relative).await, Ok(Some(h)) if h.id == mine.id);
        if !still_mine {
            tracing::warn!("{table}: the delivery's lease {relative} was taken over by another");
            return;
        }
        if let Ok(bytes) = to_json(&mine)
            && let Err(e) = store.put_plain(&table, &relative, bytes.into()).await
        {
            tracing::warn!("{table}: could not renew the delivery's lease: {e}");
        }
    }
}

async fn read(store: &Store, table: &str, relative: &str) -> Result<Option<Holder>> {
    let Some(bytes) = store.read_file_if_present(table, relative).await? else {
        return Ok(None);
    };
    // A lease cut off as it was written (an empty or partial file) holds nothing.
    match serde_json::from_slice::<Holder>(&bytes) {
        Ok(held) => Ok(Some(held)),
        Err(_) => {
            let unreadable = Holder {
                id: String::new(),
                host: String::new(),
                pid: 0,
                since: DateTime::UNIX_EPOCH,
                renewed: DateTime::UNIX_EPOCH,
            };
            Ok(Some(unreadable))
        }
    }
}

fn to_json(holder: &Holder) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(holder).map_err(|e| Error::Destination {
        message: format!("writing the delivery's lease: {e}"),
    })
}

/// This machine's name, to tell its own processes' leases from others'.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed with it.
    let written = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    match written {
        0 => {
            let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
            String::from_utf8_lossy(&buffer[..end]).into_owned()
        }
        _ => String::new(),
    }
}

/// Whether process `pid` of this machine runs (one that cannot be signalled by this user
/// still runs).
fn process_runs(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks that the process exists and sends nothing.
    let answer = unsafe { libc::kill(pid, 0) };
    answer == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let store = Store::open(&dir.path().display().to_string(), true).unwrap();
        (dir, store)
    }

    async fn write(store: &Store, holder: &Holder) {
        (store.put_plain("t", "d/lease.json", to_json(holder).unwrap().into()))
            .await
            .unwrap();
    }

    fn holder(host: String, pid: u32, renewed_ago: Duration) -> Holder {
        let renewed = Utc::now() - chrono::Duration::from_std(renewed_ago).unwrap();
        Holder {
            id: "other".to_string(),
            host,
            pid,
            since: renewed,
            renewed,
        }
    }

    #[tokio::test]
    async fn a_held_lease_refuses_a_second_delivery_until_released() {
        let (_dir, store) = open();
        let first = Lease::take(&store, "t", "d", "d").await.unwrap();
        let second = Lease::take(&store, "t", "d", "destination d of t").await;
        let message = second.err().unwrap().to_string();
        assert!(
            message.contains("another delivery to it is under way"),
            "{message}"
        );
        assert!(
            message.contains(&format!("process {}", std::process::id())),
            "{message}"
        );
        first.release().await.unwrap();
        let third = Lease::take(&store, "t", "d", "d").await.unwrap();
        third.release().await.unwrap();
        assert!(
            store
                .read_file_if_present("t", "d/lease.json")
                .await
                .unwrap()
                .is_none()
        );
    }

    async fn take_and_release(store: &Store) {
        let lease = Lease::take(store, "t", "d", "d").await.unwrap();
        lease.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_of_a_process_gone_or_long_silent_is_taken_over() {
        let (_dir, store) = open();
        // A process of this machine that has ended (a child waited for).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        write(&store, &holder(host_name(), gone, Duration::ZERO)).await;
        take_and_release(&store).await;
        // Another machine's, not renewed for longer than STALE_AFTER.
        let silent = STALE_AFTER + Duration::from_secs(1);
        write(&store, &holder("elsewhere".into(), 1, silent)).await;
        take_and_release(&store).await;
        // An unreadable lease (cut off as it was written).
        store
            .put_plain("t", "d/lease.json", "{".into())
            .await
            .unwrap();
        take_and_release(&store).await;
        // Another machine's, renewed a moment ago: held.
        write(
            &store,
            &holder("elsewhere".into(), 1, Duration::from_secs(5)),
        )
        .await;
        assert!(Lease::take(&store, "t", "d", "d").await.is_err());
    }

    #[tokio::test]
    async fn releasing_a_lease_taken_over_leaves_the_new_holders() {
        let (_dir, store) = open();
        let first = Lease::take(&store, "t", "d", "d").await.unwrap();
        write(&store, &holder("elsewhere".into(), 1, Duration::ZERO)).await;
        first.release().await.unwrap();
        let held = read(&store, "t", "d/lease.json").await.unwrap().unwrap();
        assert_eq!(held.id, "other");
    }
}
