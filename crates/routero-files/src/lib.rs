//! Files and directories only their owner can read. Every file Routero's services create (keys,
//! databases, the audit spool, the persisted snapshot, the policy engine's config and log) goes
//! through here: directories are 0700 and files 0600, set explicitly rather than left to the
//! umask, and an existing directory of ours is tightened if it was wider.
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` (and missing parents) as 0700, or tightens it to 0700 if it exists. A shared
/// directory (world-writable or sticky, like `/tmp`) is refused rather than changed: files of
/// ours do not belong there, and it is not ours to change.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Ok(metadata) = fs::metadata(dir) {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o1002 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is a shared directory (world-writable or sticky): choose a directory of your own",
                    dir.display()
                ),
            ));
        }
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    restrict(dir, 0o700)
}

/// Opens `path` for appending, creating it 0600 (an existing file is tightened to 0600).
pub fn append_private(path: &Path) -> io::Result<File> {
    let file = options().append(true).open(path)?;
    restrict(path, 0o600)?;
    Ok(file)
}

/// Creates `path` as 0600; fails if it exists.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    options().write(true).create_new(true).open(path)
}

/// Writes `bytes` to `path` atomically (a 0600 temporary file, synced, then renamed).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = options().write(true).truncate(true).open(&temporary)?;
        restrict(&temporary, 0o600)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, path)
}

/// Ensures `path` exists as a 0600 file (tightening it if it exists), without changing it.
pub fn touch_private(path: &Path) -> io::Result<()> {
    options().write(true).open(path)?;
    restrict(path, 0o600)
}

fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn everything_is_owner_only_however_it_started() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(
            mode(&dir),
            0o700,
            "an existing wider directory is tightened"
        );

        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(
            private_dir(&shared).is_err(),
            "a /tmp-like directory is refused"
        );
        assert_eq!(mode(&shared), 0o1777 & 0o777, "and left as it was");

        let secret = dir.join("key");
        create_new_private(&secret).unwrap();
        assert_eq!(mode(&secret), 0o600);
        assert!(create_new_private(&secret).is_err(), "never overwritten");

        let log = dir.join("log");
        fs::write(&log, "x").unwrap();
        fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
        append_private(&log).unwrap();
        assert_eq!(mode(&log), 0o600);

        let written = dir.join("snapshot.bin");
        write_private(&written, b"sealed").unwrap();
        assert_eq!(
            (mode(&written), fs::read(&written).unwrap()),
            (0o600, b"sealed".to_vec())
        );
        let db = dir.join("db");
        touch_private(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
    }
}
