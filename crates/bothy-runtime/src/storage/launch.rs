//! Connecting a runtime to its data dir's storage process at start: adopt
//! the one that answers, start one if none does, replace one of another
//! build that serves no disk, and make sure it holds the base image.

use std::path::Path;

use super::client::{Launch, StorageClient};
use crate::disk::Disks;
use crate::{image, object_store_url, storage, RuntimeConfig, RuntimeError, StorageLaunch};

/// Connects to the storage process of this data dir (starting it if none
/// answers) and makes sure the base image is in its storage.
///
/// A storage process of another build that serves no disk is replaced, so
/// an upgrade takes effect; one that serves disks keeps them (its protocol
/// is checked) until the boxes are drained.
pub(crate) async fn open_storage(
    cfg: &RuntimeConfig,
    base_image: &Path,
) -> Result<Disks, RuntimeError> {
    let server = storage::ServerConfig {
        data_dir: cfg.data_dir.clone(),
        instance: cfg.instance.clone(),
        object_store: object_store_url(&cfg.data_dir, cfg.object_store.as_deref()),
        cache_bytes: cfg.cache_bytes,
    };
    let launch = match cfg.storage {
        StorageLaunch::Process => Launch::Process {
            exe: cfg.exe.clone(),
            args: storage_process_args(&server),
        },
        StorageLaunch::InProcess => Launch::InProcess(server),
    };
    let client = StorageClient::new(storage::socket_path(&cfg.data_dir), launch);
    // A storage process that is on its way out (its last daemon just went
    // away) may still answer a first call and drop the next: start over
    // with the next one, a few times.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match prepare_storage(cfg, &client, base_image).await {
            Err(RuntimeError::StorageLost(e)) if attempts < 5 => {
                tracing::warn!(
                    attempt = attempts,
                    "the storage process went away while starting; trying again: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempts)).await;
            }
            Err(e) => return Err(e),
            Ok(base_volume) => return Ok(Disks::new(client, base_volume)),
        }
    }
}

/// Connects to (or starts) the storage process, replaces one of another
/// build when it serves no disk, and makes sure it holds the base image.
/// Returns the base image's volume name.
async fn prepare_storage(
    cfg: &RuntimeConfig,
    client: &StorageClient,
    base_image: &Path,
) -> Result<String, RuntimeError> {
    let mut hello = client.ensure_started().await?;
    if cfg.storage == StorageLaunch::Process {
        let exe = cfg.exe.clone();
        let ours = tokio::task::spawn_blocking(move || storage::server::build_id(&exe))
            .await
            .unwrap_or_default();
        if hello.build != ours {
            let served: storage::proto::Served =
                client.call(&storage::proto::Request::Served).await?;
            if served.volumes.is_empty() {
                tracing::info!(old = %hello.build, new = %ours, "replacing the storage process with this build");
                client.shutdown().await?;
                hello = client.ensure_started().await?;
            } else {
                tracing::info!(pid = hello.pid, disks = served.volumes.len(), "the storage process runs another build and serves disks: kept until the boxes are drained (`bothy daemon --stop-boxes`)");
            }
        }
    }
    if hello.protocol != storage::proto::PROTOCOL {
        return Err(RuntimeError::HostNotReady(format!(
            "the storage process (pid {}) speaks protocol {}, this daemon {}: stop its boxes with the previous daemon (`bothy daemon --stop-boxes`), then start this one",
            hello.pid,
            hello.protocol,
            storage::proto::PROTOCOL
        )));
    }
    let base_volume = storage::base::volume_name(image::IMAGE_VERSION);
    client
        .call::<()>(&storage::proto::Request::EnsureBase {
            volume: base_volume.clone(),
            image: base_image.to_path_buf(),
        })
        .await?;
    Ok(base_volume)
}

/// The command line of `bothy storage-server` for `cfg`.
fn storage_process_args(cfg: &storage::ServerConfig) -> Vec<std::ffi::OsString> {
    vec![
        "storage-server".into(),
        "--data-dir".into(),
        cfg.data_dir.clone().into(),
        "--instance".into(),
        cfg.instance.clone().into(),
        "--object-store".into(),
        cfg.object_store.clone().into(),
        "--cache-size".into(),
        cfg.cache_bytes.to_string().into(),
    ]
}
