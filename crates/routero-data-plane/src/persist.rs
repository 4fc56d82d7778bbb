//! The last good snapshot on disk, sealed under the data-plane key, so a data plane restarted
//! while the control plane is down can serve (within the staleness bound).

use std::path::Path;

use prost::Message;
use routero_crypto::SealingKey;
use routero_proto::{WireState, aad, v1};

use crate::DataPlaneError;

/// Writes `state` and the last contact time atomically (temporary file, then rename), mode 0600.
pub fn save(
    path: &Path,
    key: &SealingKey,
    state: &WireState,
    last_contact_ms: i64,
) -> Result<(), DataPlaneError> {
    let record = v1::PersistedSnapshot {
        snapshot: Some(state.to_full_message()),
        last_contact_ms,
    };
    let sealed = key.seal(aad::PERSISTED_SNAPSHOT, &record.encode_to_vec())?;
    routero_files::write_private(path, &sealed)
        .map_err(|e| DataPlaneError::Persist(format!("{}: {e}", path.display())))
}

/// Reads a persisted snapshot: the state and the last contact time. `Ok(None)` if absent.
pub fn load(path: &Path, key: &SealingKey) -> Result<Option<(WireState, i64)>, DataPlaneError> {
    let sealed = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataPlaneError::Persist(format!("{}: {e}", path.display()))),
    };
    let plain = key.open(aad::PERSISTED_SNAPSHOT, &sealed)?;
    let record = v1::PersistedSnapshot::decode(plain.as_slice())
        .map_err(|e| DataPlaneError::Persist(format!("decode: {e}")))?;
    let message = record
        .snapshot
        .ok_or_else(|| DataPlaneError::Persist("no snapshot in file".into()))?;
    let mut state = WireState::default();
    state.apply(message)?;
    Ok(Some((state, record.last_contact_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.bin");
        let key = SealingKey::generate().unwrap();
        let state = WireState::new(
            9,
            vec![1, 2],
            [v1::VirtualKey {
                key_hash: vec![3; 32],
                key_id: "k".into(),
                ..Default::default()
            }],
            [],
            [],
        );
        save(&path, &key, &state, 1234).unwrap();
        assert_eq!(load(&path, &key).unwrap(), Some((state, 1234)));
        let other = SealingKey::generate().unwrap();
        assert!(load(&path, &other).is_err());
        assert_eq!(load(&dir.path().join("absent"), &key).unwrap(), None);
    }
}
