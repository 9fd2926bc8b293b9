//! The data directory's identity: a small file saying which cluster and node wrote the
//! directory, in which format. A node refuses a directory of another cluster, of
//! another node id, or of a format newer than it reads, before it touches any group.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The identity file's name in the data directory.
pub const IDENTITY_FILE: &str = "concord-node.toml";

/// The data directory format this build writes and reads (the log's segments carry
/// their own format version too).
pub const DATA_DIR_FORMAT: u32 = 1;

/// What the identity file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    format: u32,
    cluster_id: String,
    node_id: u64,
}

/// Checks that `dir` belongs to `cluster_id` and node `node_id`, writing the identity
/// file if the directory has none yet (new, or written before identity files
/// existed). The caller holds the directory's lock. Errors say what differs and
/// what to do.
pub(crate) fn check_identity(dir: &Path, cluster_id: &str, node_id: u64) -> Result<(), String> {
    if verify_identity(dir, cluster_id, node_id)? {
        return Ok(());
    }
    let ours = Identity {
        format: DATA_DIR_FORMAT,
        cluster_id: cluster_id.to_string(),
        node_id,
    };
    write_identity(dir, &ours)
        .map_err(|error| format!("writing {}: {error}", dir.join(IDENTITY_FILE).display()))
}

/// Reads `dir`'s identity without writing anything (before the log is opened, so a
/// directory of another cluster is not even recovered): `Ok(true)` if it is ours,
/// `Ok(false)` if the directory (or the file) does not exist yet, an error saying
/// what differs otherwise.
pub(crate) fn verify_identity(dir: &Path, cluster_id: &str, node_id: u64) -> Result<bool, String> {
    let path = dir.join(IDENTITY_FILE);
    let ours = Identity {
        format: DATA_DIR_FORMAT,
        cluster_id: cluster_id.to_string(),
        node_id,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(format!("reading {}: {error}", path.display())),
    };
    let theirs: Identity = toml::from_str(&text)
        .map_err(|error| format!("{} is not a concord identity file: {error}", path.display()))?;
    if theirs.format > DATA_DIR_FORMAT {
        return Err(format!(
            "written in data directory format {}; this build reads up to format \
             {DATA_DIR_FORMAT}: run a newer concord",
            theirs.format
        ));
    }
    if theirs.cluster_id != ours.cluster_id {
        return Err(format!(
            "it belongs to cluster {:?}, and this node is configured for cluster {:?}: \
             set cluster_id to {:?} or use another data directory",
            theirs.cluster_id, ours.cluster_id, theirs.cluster_id
        ));
    }
    if theirs.node_id != ours.node_id {
        return Err(format!(
            "it was written by node {}, and this node is node {}: each node needs its \
             own data directory",
            theirs.node_id, ours.node_id
        ));
    }
    Ok(true)
}

/// Writes the identity file atomically: a temporary file, synced, renamed over, and
/// the directory synced.
fn write_identity(dir: &Path, identity: &Identity) -> std::io::Result<()> {
    let text = format!(
        "# Written by concord; identifies this data directory. Do not edit.\n{}",
        toml::to_string(identity).map_err(std::io::Error::other)?
    );
    let temporary = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, dir.join(IDENTITY_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A new directory gets the identity; the same identity passes again; another
    // cluster, another node id and a newer format are refused with what differs.
    #[test]
    fn identity_is_written_once_and_checked_after() {
        let dir = tempfile::tempdir().unwrap();
        check_identity(dir.path(), "alpha", 3).unwrap();
        check_identity(dir.path(), "alpha", 3).unwrap();
        let other_cluster = check_identity(dir.path(), "beta", 3).unwrap_err();
        assert!(
            other_cluster.contains("\"alpha\"") && other_cluster.contains("\"beta\""),
            "{other_cluster}"
        );
        let other_node = check_identity(dir.path(), "alpha", 4).unwrap_err();
        assert!(
            other_node.contains("node 3") && other_node.contains("node 4"),
            "{other_node}"
        );
        std::fs::write(
            dir.path().join(IDENTITY_FILE),
            "format = 9\ncluster_id = \"alpha\"\nnode_id = 3\n",
        )
        .unwrap();
        let newer = check_identity(dir.path(), "alpha", 3).unwrap_err();
        assert!(newer.contains("format 9"), "{newer}");
        std::fs::write(dir.path().join(IDENTITY_FILE), "garbage").unwrap();
        let garbage = check_identity(dir.path(), "alpha", 3).unwrap_err();
        assert!(garbage.contains("not a concord identity file"), "{garbage}");
    }
}
