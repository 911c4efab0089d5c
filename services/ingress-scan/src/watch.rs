//! The watched folder: what network scanners write to (an SMB/NFS share).
//!
//! Layout under `watch_dir`: scanners write into `inbox/` (or into a
//! sub-folder of it per scanning batch, whose name becomes the batch id); a
//! file read and published goes to `done/`, a file set aside to
//! `quarantine/` (under the same batch sub-folder). A file is
//! read only when complete: names starting with `.` or ending in `.part`,
//! `.tmp` or `.partial` are being written (the rename convention), and any
//! other file must keep the same size and modification time for
//! `stable_ms` (scanners that write in place). A file is moved only after
//! its record is committed and, when published, after JetStream has
//! acknowledged its event: a crash before the move leaves it in `inbox/`,
//! and on the next pass its SHA-256 is known, so it is moved without being
//! read or published again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::core::{Incoming, STATE_PUBLISHED, ScanApi, Source};

/// A file that could not be handled (tools missing, bus down) is tried
/// again after this pause, not on every listing.
const RETRY_AFTER: Duration = Duration::from_secs(5);

const IN_PROGRESS_SUFFIXES: &[&str] = &[".part", ".tmp", ".partial", ".crdownload"];

/// Size and modification time, and since when they have not changed.
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
    since: Instant,
}

pub async fn run(api: ScanApi, dir: PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    let inbox = dir.join("inbox");
    for d in [&inbox, &dir.join("done"), &dir.join("quarantine")] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the scan folder {}: {e}", d.display()))?;
    }
    let poll = Duration::from_millis(api.config.poll_interval_ms);
    let stable = Duration::from_millis(api.config.stable_ms);
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    loop {
        let ready = match scan_inbox(&inbox, &mut seen, stable).await {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(%error, "cannot list the scan inbox");
                Vec::new()
            }
        };
        // Each file in its own task: at most `scan.concurrency` are read at
        // once (the API's permits); a task finishes even when shutdown is
        // asked mid-way, within the process's grace period.
        let tasks: Vec<_> = ready
            .into_iter()
            .map(|path| {
                let api = api.clone();
                let dir = dir.clone();
                tokio::spawn(async move {
                    let done = handle(&api, &dir, &path).await;
                    (path, done)
                })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok((path, true)) => {
                    seen.remove(&path);
                }
                Ok((path, false)) => {
                    if let Some(s) = seen.get_mut(&path) {
                        s.since = Instant::now() + RETRY_AFTER;
                    }
                }
                Err(error) => tracing::error!(%error, "scan task failed"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Files of the inbox that are complete.
async fn scan_inbox(
    inbox: &Path,
    seen: &mut HashMap<PathBuf, Seen>,
    stable: Duration,
) -> std::io::Result<Vec<PathBuf>> {
    let mut ready = Vec::new();
    let mut present = Vec::new();
    // The inbox's files, and those of its sub-folders (one level: a
    // scanning batch each).
    let mut files = Vec::new();
    let mut dirs = vec![(inbox.to_path_buf(), true)];
    while let Some((dir, top)) = dirs.pop() {
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if top => return Err(e),
            Err(_) => continue,
        };
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || IN_PROGRESS_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                continue;
            }
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if meta.is_dir() && top {
                dirs.push((entry.path(), false));
            } else if meta.is_file() {
                files.push((entry.path(), meta));
            }
        }
    }
    for (path, meta) in files {
        present.push(path.clone());
        let (len, modified) = (meta.len(), meta.modified().ok());
        match seen.get_mut(&path) {
            Some(s) if s.len == len && s.modified == modified => {
                if s.since.elapsed() >= stable {
                    ready.push(path);
                }
            }
            _ => {
                seen.insert(
                    path,
                    Seen {
                        len,
                        modified,
                        since: Instant::now(),
                    },
                );
            }
        }
    }
    seen.retain(|p, _| present.contains(p));
    ready.sort();
    Ok(ready)
}

/// Read, record and move one file; false when it must be tried again.
async fn handle(api: &ScanApi, dir: &Path, path: &Path) -> bool {
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A file in a sub-folder of the inbox belongs to that scanning batch.
    let batch = path
        .parent()
        .filter(|p| *p != dir.join("inbox"))
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let len = match tokio::fs::metadata(path).await {
        Ok(m) => m.len(),
        Err(error) => {
            tracing::warn!(%error, "cannot read a scan file, will retry");
            return false;
        }
    };
    let accepted = if len > api.config.max_file_bytes {
        // Never loaded into memory: hashed as a stream and set aside.
        api.quarantine_oversized(path, &filename, len).await
    } else {
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(%error, "cannot read a scan file, will retry");
                return false;
            }
        };
        api.accept(Incoming {
            filename: filename.clone(),
            bytes,
            source: Source::Folder,
            batch_id: batch.clone(),
        })
        .await
    };
    let model = match accepted {
        Ok(m) => m,
        Err(error) => {
            tracing::warn!(%error, "scan not accepted now, will retry");
            return false;
        }
    };
    let target = dir
        .join(if model.state == STATE_PUBLISHED {
            "done"
        } else {
            "quarantine"
        })
        .join(&batch);
    if let Err(error) = tokio::fs::create_dir_all(&target).await {
        tracing::warn!(scan_file = %model.id, %error, "cannot create a scan folder, will retry");
        return false;
    }
    let mut dest = target.join(&filename);
    if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
        dest = target.join(format!("{}-{filename}", model.id));
    }
    match tokio::fs::rename(path, &dest).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(scan_file = %model.id, %error, "cannot move a scan file, will retry");
            false
        }
    }
}
