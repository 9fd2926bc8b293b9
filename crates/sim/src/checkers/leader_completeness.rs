//! Leader Completeness (Raft paper Figure 3, §5.4): if a log entry is committed in a
//! given term, then that entry will be present in the logs of the leaders for all
//! higher-numbered terms.
//!
//! Checked at the moment a node wins an election: its log (durable and unstable parts)
//! must hold every entry recorded as committed in an earlier term by
//! [`CommittedRecord`]. Entries at or below the new leader's compaction point live in
//! its snapshot and are not compared entry by entry.

use concord_raft::{NodeId, Term};

use super::committed_never_lost::CommittedRecord;
use super::LogView;

/// Checks that `leader`, which has just won `term`, holds every entry committed in a
/// term before `term`.
pub fn check(
    leader: NodeId,
    term: Term,
    log: &impl LogView,
    committed: &CommittedRecord,
) -> Result<(), String> {
    let compaction_point = log.first_index() - 1;
    let last_index = log.last_index();
    for (index, entry) in committed.entries_from(compaction_point) {
        if entry.commit_term >= term {
            continue;
        }
        let held = if index > last_index {
            None
        } else {
            log.term(index)
        };
        if held != Some(entry.term) {
            return Err(format!(
                "node {leader} won term {term} without committed entry {index} (term {}, \
                 committed in term {} as seen on node {} at t={}); its log holds {} \
                 (last index {last_index}, last term {})",
                entry.term,
                entry.commit_term,
                entry.node,
                entry.time,
                match held {
                    Some(held_term) => format!("an entry of term {held_term} at {index}"),
                    None => format!("nothing at {index}"),
                },
                log.term(last_index).unwrap_or(0),
            ));
        }
    }
    Ok(())
}
