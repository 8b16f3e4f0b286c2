//! The one place where a run's comparison strategy is chosen.
//!
//! Three strategies give the same classification and the same delta (the tests run each on the
//! same inputs and require identical results):
//!
//! - [`Strategy::Streamed`]: the baseline's keys and row hashes read into an index; today's
//!   file read in pieces, each typed, hashed, looked up and written as it arrives (the common
//!   daily job, never holding the file whole).
//! - [`Strategy::Matching`]: today's rows loaded whole, then matched with the baseline's keys by
//!   row position (digests of the keys, sorted), only the rows the delta needs read back.
//! - [`Strategy::Join`]: the SQL of `sql/classify.sql`, a full outer join
//!   on the key. It handles everything (tolerances, UNCHANGED rows in the delta, a hash that
//!   must be computed again), and it is the specification the others are proved equal to.
//!
//! [`choose`] is pure: what it decides follows from the [`Situation`] alone. A run asks twice
//! at most: before loading (may the source be streamed?) and, when it was not streamed, once
//! today's rows are typed (matching or join?). A strategy chosen can still hand the run to
//! the next one when the data says so (a streamed piece whose values do not fit the pinned
//! types, a key digest that repeats); the log at `-vv` names why.
//!
//! Each strategy yields the same [`super::delta::Pairs`] (the rows the delta needs and how
//! they pair), and one builder, [`super::delta::build`], makes the delta from them. What is
//! decided from the pairs rather than by matching keys (renamed keys, [`super::renames`]) is
//! therefore no concern of the choice: every strategy gets it the same way.

use std::fmt;

/// How a run matches today's rows with the baseline's, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// Today's file streamed through an index of the baseline's keys.
    Streamed,
    /// Today's rows loaded whole, matched with the baseline's keys by position.
    Matching,
    /// The full outer join of `sql/classify.sql`.
    Join,
}

impl Strategy {
    /// Every strategy, fastest first.
    pub const ALL: [Strategy; 3] = [Strategy::Streamed, Strategy::Matching, Strategy::Join];

    /// The name used in logs and by `--strategy`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Streamed => "streamed",
            Strategy::Matching => "matching",
            Strategy::Join => "join",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| format!("`{text}` is not a strategy; use streamed, matching or join"))
    }
}

/// What the choice depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Situation {
    /// The fastest strategy the run may take (tests force the slower ones); `None`: any.
    pub fastest_allowed: Option<Strategy>,
    /// The table has a baseline to compare with.
    pub has_baseline: bool,
    /// The source can be read piece by piece and each piece decided alone: one local CSV file,
    /// no transform, no dependencies, references or rules, no partitions, not incremental,
    /// not a dry run (which stores nothing, not even a spooled file).
    pub streamable: bool,
    /// Today's row hashes cover the same columns, types and clean-ups as the stored ones, so
    /// the stored hashes compare as they are.
    pub stored_hashes_apply: bool,
    /// The key columns have the baseline's types, of kinds the matching can digest.
    pub keys_matchable: bool,
    /// Some compared column has a tolerance (compared outside the hash).
    pub tolerance: bool,
    /// An output asks for UNCHANGED rows.
    pub unchanged_wanted: bool,
}

/// The fastest strategy that can decide this situation exactly.
pub fn choose(situation: &Situation) -> Strategy {
    let allowed = |s: Strategy| situation.fastest_allowed.is_none_or(|fastest| s >= fastest);
    // Matching pairs rows by key and hash alone: it needs stored hashes that compare, keys it
    // can digest, and a delta of NEW, CHANGED and DELETED rows only.
    let pairs_by_hash = situation.has_baseline
        && situation.stored_hashes_apply
        && situation.keys_matchable
        && !situation.tolerance
        && !situation.unchanged_wanted;
    // With no baseline every row is NEW: there is nothing to match, and planning a join of
    // every column (quadratic in the columns: 200 s for 10,000 of them) is all it would cost.
    let nothing_to_match = !situation.has_baseline;
    if pairs_by_hash && situation.streamable && allowed(Strategy::Streamed) {
        Strategy::Streamed
    } else if (pairs_by_hash || nothing_to_match) && allowed(Strategy::Matching) {
        Strategy::Matching
    } else {
        Strategy::Join
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily_csv() -> Situation {
        Situation {
            fastest_allowed: None,
            has_baseline: true,
            streamable: true,
            stored_hashes_apply: true,
            keys_matchable: true,
            tolerance: false,
            unchanged_wanted: false,
        }
    }

    #[test]
    fn the_daily_csv_job_is_streamed() {
        assert_eq!(choose(&daily_csv()), Strategy::Streamed);
    }

    #[test]
    fn a_source_that_cannot_stream_is_matched() {
        let s = Situation {
            streamable: false,
            ..daily_csv()
        };
        assert_eq!(choose(&s), Strategy::Matching);
    }

    #[test]
    fn a_first_run_has_nothing_to_match() {
        for unchanged_wanted in [false, true] {
            let s = Situation {
                has_baseline: false,
                keys_matchable: false,
                unchanged_wanted,
                ..daily_csv()
            };
            assert_eq!(choose(&s), Strategy::Matching);
            let forced = Situation {
                fastest_allowed: Some(Strategy::Join),
                ..s
            };
            assert_eq!(choose(&forced), Strategy::Join);
        }
    }

    #[test]
    fn whatever_pairs_rows_otherwise_than_by_hash_is_joined() {
        let cases = [
            Situation {
                stored_hashes_apply: false,
                ..daily_csv()
            },
            Situation {
                keys_matchable: false,
                ..daily_csv()
            },
            Situation {
                tolerance: true,
                ..daily_csv()
            },
            Situation {
                unchanged_wanted: true,
                ..daily_csv()
            },
        ];
        for situation in cases {
            assert_eq!(choose(&situation), Strategy::Join, "{situation:?}");
        }
    }

    #[test]
    fn a_forced_strategy_is_the_fastest_taken() {
        for (fastest, expected) in [
            (Strategy::Streamed, Strategy::Streamed),
            (Strategy::Matching, Strategy::Matching),
            (Strategy::Join, Strategy::Join),
        ] {
            let s = Situation {
                fastest_allowed: Some(fastest),
                ..daily_csv()
            };
            assert_eq!(choose(&s), expected);
        }
        // Forcing a faster strategy than the situation allows changes nothing.
        let s = Situation {
            fastest_allowed: Some(Strategy::Streamed),
            tolerance: true,
            ..daily_csv()
        };
        assert_eq!(choose(&s), Strategy::Join);
    }

    #[test]
    fn names_read_back() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
        }
        assert!("fast".parse::<Strategy>().is_err());
    }
}
