//! Crashes: a log cut at any byte of its final records recovers exactly the batches
//! that were completely written, and nothing else.

use concord_storage::LogConfig;

use crate::support::{assert_log_matches, build_history, exact_config, open_sim, History};

/// Cuts the newest segment of `history` at every byte of its last `final_batches`
/// batches and checks each restart against the expected state.
fn cut_at_every_byte(history: &History, final_batches: usize) -> usize {
    let last = history.steps.last().unwrap();
    let final_segment = last.segment.clone();
    let from = history.steps[history.steps.len() - 1 - final_batches].segment_bytes;
    let from = if history.steps[history.steps.len() - 1 - final_batches].segment == final_segment {
        from
    } else {
        0
    };
    let mut cuts = 0;
    for cut in from..=last.segment_bytes {
        let fs = history.fs.fork();
        fs.truncate_durably(&final_segment, cut).unwrap();
        let log = open_sim(&fs, history.config.clone())
            .unwrap_or_else(|error| panic!("cut at byte {cut}: {error}"));
        // The newest batch wholly within the cut (or any batch of an older segment).
        let expected = history
            .steps
            .iter()
            .rev()
            .find(|step| step.segment != final_segment || step.segment_bytes <= cut)
            .expect("the opening state is always complete");
        assert_log_matches(&log, &expected.models, &format!("cut at byte {cut}"));
        let torn = &log.recovery().torn_tail;
        if expected.segment == final_segment && expected.segment_bytes == cut {
            assert_eq!(*torn, None, "cut at byte {cut} is a batch boundary");
        } else if expected.segment == final_segment {
            let torn = torn.as_ref().expect("a torn tail is reported");
            assert_eq!(
                (torn.offset, torn.path.clone()),
                (expected.segment_bytes, final_segment.clone())
            );
        }
        cuts += 1;
    }
    cuts
}

// A log of a few hundred records in one segment, cut at every byte of its last three
// batches (each holding entries of one group and the hard state of another): every
// restart recovers exactly the complete batches, so a batch's entries and hard state
// come back together or not at all.
#[test]
fn crash_at_every_byte_of_the_final_records() {
    let config = LogConfig {
        segment_bytes_max: 1 << 20,
        ..exact_config()
    };
    let history = build_history(11, config, 150);
    let records: u64 = history.steps.len() as u64 * 3;
    assert!(records >= 300, "a few hundred records: {records}");
    assert_eq!(
        history.steps.first().unwrap().segment,
        history.steps.last().unwrap().segment,
        "one segment"
    );
    let cuts = cut_at_every_byte(&history, 3);
    assert!(cuts > 100, "{cuts} cuts");
}

// The same with small segments: the log spans many segment files (each starting with a
// checkpoint), and the cut falls in the newest, sometimes inside its header or
// checkpoint, which drops the whole new segment.
#[test]
fn crash_at_every_byte_across_segments() {
    let history = build_history(12, exact_config(), 150);
    let segments = history.fs.paths().len();
    assert!(segments > 5, "{segments} files");
    // Enough final batches that the cut range starts in the newest segment's header.
    let last = history.steps.last().unwrap();
    let in_last_segment = history
        .steps
        .iter()
        .filter(|step| step.segment == last.segment)
        .count();
    cut_at_every_byte(&history, in_last_segment.min(history.steps.len() - 1));
}

// Torn crashes with random prefixes of unsynced writes never lose an acknowledged batch:
// with nothing in flight, a torn crash after each batch gives back every batch.
#[test]
fn torn_crash_after_acknowledged_batches_loses_nothing() {
    let history = build_history(13, exact_config(), 60);
    for seed in 0..20 {
        let fs = history.fs.fork();
        fs.crash_torn();
        let log = open_sim(&fs, history.config.clone()).unwrap();
        assert_log_matches(
            &log,
            &history.steps.last().unwrap().models,
            &format!("seed {seed}"),
        );
    }
}
