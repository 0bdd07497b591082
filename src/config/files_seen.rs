//! What a config's files look like on disk, for `server.watch_config`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What the config's files look like on disk: each file's path, length and
/// modification time (the config file, then the filter files). A change in
/// any of them is what `server.watch_config` reloads on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesSeen(Vec<(PathBuf, Option<(u64, SystemTime)>)>);

impl FilesSeen {
    /// The config file and the `.yaml`/`.yml` files of `filters` (a missing
    /// file or directory is part of what is seen: its appearing is a change).
    pub fn read(config: &Path, filters: Option<&Path>) -> FilesSeen {
        Self::read_after(config, stat(config), filters)
    }

    /// As [`FilesSeen::read`], with the config file as seen earlier
    /// (`Config::load` looks at it before reading it, so that a write in
    /// between is a change still to come).
    pub fn read_after(
        config: &Path,
        config_seen: Option<(u64, SystemTime)>,
        filters: Option<&Path>,
    ) -> FilesSeen {
        let mut seen = vec![(config.to_path_buf(), config_seen)];
        if let Some(dir) = filters {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            seen.push((dir.to_path_buf(), stat(dir)));
            seen.extend(files.into_iter().map(|p| {
                let s = stat(&p);
                (p, s)
            }));
        }
        FilesSeen(seen)
    }
}

/// A file's length and modification time, `None` when it cannot be read.
pub fn stat(p: &Path) -> Option<(u64, SystemTime)> {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.len(), m.modified().ok()?)))
}
