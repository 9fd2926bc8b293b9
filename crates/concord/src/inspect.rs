//! `concord inspect <data-dir>`: what a stopped node has on disk, as a table or JSON.
//! The report itself is concord-storage's ([`concord_storage::inspect_with`]); this
//! checks the path first, so a wrong path gets a clear message (and no `LOCK` file is
//! created in a directory that is not a node's), limits the report to the groups asked
//! for, and prints it.

use std::io::{self, Write};
use std::path::Path;

use concord_storage::{inspect_with, DataDirReport, InspectOptions, StdFs};

use crate::cli::InspectArgs;
use concord_cli::write_all;

use crate::{Error, Exit};

/// Why a running node's directory is refused.
const LOCKED: &str =
    "the directory is locked by a running node (LOCK held); stop the node or inspect a copy";

/// Runs `concord inspect` with `args`, printing the report to `out`.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> Result<(), Error> {
    let dir = &args.data_dir;
    let what = format!("inspecting {}", dir.display());
    check_data_dir(dir).map_err(|why| Error::new(Exit::Failure, &what, why))?;
    let options = InspectOptions {
        entries_per_group_max: args.entries_per_group_max(),
    };
    let mut report = inspect_with(&StdFs, dir, &options).map_err(|error| match error {
        concord_storage::Error::Locked { .. } => Error::new(Exit::DataDirInUse, &what, LOCKED),
        other => Error::new(Exit::Failure, &what, other),
    })?;
    select_groups(&mut report, &args.groups)
        .map_err(|why| Error::new(Exit::NotFound, &what, why))?;
    let text = if args.json {
        report.to_json() + "\n"
    } else {
        report.to_string()
    };
    write_all(out, text.as_bytes())
        .map_err(|error| Error::new(Exit::Failure, "writing the report", error))
}

/// Checks that `dir` looks like a node's data directory: an existing directory with
/// at least one log segment in it.
fn check_data_dir(dir: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(dir).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => "no such directory".to_owned(),
        _ => format!("reading it: {error}"),
    })?;
    if !metadata.is_dir() {
        return Err("not a directory; expected a node's data directory".to_owned());
    }
    let listing = std::fs::read_dir(dir).map_err(|error| format!("listing it: {error}"))?;
    for entry in listing {
        let entry = entry.map_err(|error| format!("listing it: {error}"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("segment-") && name.ends_with(".log") {
            return Ok(());
        }
    }
    Err("no concord log in it: a node's data directory holds segment-NNNNNNNNNNNNNNNNNNNN.log files".to_owned())
}

/// Keeps only the groups in `wanted` (all of them if it is empty), failing if one is
/// not in the report.
fn select_groups(report: &mut DataDirReport, wanted: &[u64]) -> Result<(), String> {
    if wanted.is_empty() {
        return Ok(());
    }
    let held: Vec<u64> = report.groups.iter().map(|group| group.group).collect();
    if let Some(missing) = wanted.iter().find(|group| !held.contains(group)) {
        let held = if held.is_empty() {
            "it holds no groups".to_owned()
        } else {
            let ids: Vec<String> = held.iter().map(u64::to_string).collect();
            format!("it holds groups {}", ids.join(", "))
        };
        return Err(format!("no group {missing} in it ({held})"));
    }
    report.groups.retain(|group| wanted.contains(&group.group));
    Ok(())
}
