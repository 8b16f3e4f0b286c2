//! Tests of the matching strategy.
use super::*;
use datafusion::arrow::array::{StringArray, UInt64Array};
use datafusion::arrow::datatypes::{Field, Schema};
use std::sync::Arc;

fn batch(keys: &[&str], hashes: &[u64]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("sku", DataType::Utf8, false),
            Field::new("_row_hash", DataType::UInt64, false),
        ])),
        vec![
            Arc::new(StringArray::from(keys.to_vec())),
            Arc::new(UInt64Array::from(hashes.to_vec())),
        ],
    )
    .unwrap()
}

fn parquet(batches: &[RecordBatch]) -> (tempfile::NamedTempFile, ParquetRows) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let props = datafusion::parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(3))
        .build();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        file.reopen().unwrap(),
        batches[0].schema(),
        Some(props),
    )
    .unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
    let rows = ParquetRows::open(
        crate::store::LocalFile::at(file.path().to_path_buf()),
        "test.parquet",
    )
    .unwrap();
    (file, rows)
}

#[test]
fn keys_are_matched_across_batches_and_row_groups() {
    let (_file, old) = parquet(&[
        batch(&["a", "b", "c", "d"], &[1, 2, 3, 4]),
        batch(&["e", "f", "g"], &[5, 6, 7]),
    ]);
    let new = [
        batch(&["g", "a", "x"], &[7, 1, 9]),
        batch(&["b", "d", "y", "e"], &[20, 4, 9, 50]),
    ];
    let key = ["sku".to_string()];
    let matched = match_positions(&new, &key, "_row_hash", &old)
        .unwrap()
        .unwrap();
    assert_eq!(matched.new, vec![2, 5]);
    assert_eq!(matched.changed, vec![(3, 1), (6, 4)]);
    assert_eq!(matched.deleted, vec![2, 5]);
    assert_eq!(matched.unchanged, 3);

    let taken = old.take(&[1, 2, 4, 5]).unwrap();
    assert_eq!(keys_of(&taken), ["b", "c", "e", "f"]);
    assert_eq!(taken.iter().map(|b| b.num_columns()).min(), Some(2));
    let taken_new = take_rows(&new, &[2, 3, 5, 6]).unwrap();
    assert_eq!(keys_of(&taken_new), ["x", "b", "y", "e"]);
    assert!(old.take(&[]).unwrap().is_empty());
}

fn keys_of(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let keys = b.column(0).as_string::<i32>().clone();
            keys.iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A snapshot streamed past the baseline's index, piece by piece (pieces looked up on
/// several threads, added in order), matches as the snapshot held whole does.
#[test]
fn a_streamed_snapshot_matches_as_one_held_whole() {
    let (_file, old) = parquet(&[
        batch(&["a", "b", "c", "d"], &[1, 2, 3, 4]),
        batch(&["e", "f", "g"], &[5, 6, 7]),
    ]);
    let pieces = [
        vec![batch(&["g", "a", "x"], &[7, 1, 9])],
        vec![batch(&["b"], &[20]), batch(&["d", "y", "e"], &[4, 9, 50])],
    ];
    let key = ["sku".to_string()];
    let whole: Vec<RecordBatch> = pieces.iter().flatten().cloned().collect();
    let expected = match_positions(&whole, &key, "_row_hash", &old)
        .unwrap()
        .unwrap();
    let index = BaselineIndex::read(&old, &key, "_row_hash")
        .unwrap()
        .unwrap();
    let found: Vec<PieceMatch> = crate::parallel::map(&pieces, |piece| {
        index.look_up(piece, &[0], 1).unwrap().unwrap()
    });
    assert_eq!(found[1].rows_to_take(), vec![0, 2, 3]);
    let mut matches = PieceMatches::default();
    for piece in found {
        assert!(matches.add(piece));
    }
    assert_eq!(matches.rows(), 7);
    assert_eq!(index.finish(matches), Some(expected));
}

#[test]
fn a_key_repeated_in_a_streamed_snapshot_is_left_to_the_join() {
    let (_file, old) = parquet(&[batch(&["a", "b"], &[1, 2])]);
    let key = ["sku".to_string()];
    // A baseline key twice, in one piece or in two.
    let index = BaselineIndex::read(&old, &key, "_row_hash")
        .unwrap()
        .unwrap();
    assert!(
        index
            .look_up(&[batch(&["a", "a"], &[1, 2])], &[0], 1)
            .unwrap()
            .is_none()
    );
    let index = BaselineIndex::read(&old, &key, "_row_hash")
        .unwrap()
        .unwrap();
    assert!(
        index
            .look_up(&[batch(&["b"], &[2])], &[0], 1)
            .unwrap()
            .is_some()
    );
    assert!(
        index
            .look_up(&[batch(&["b"], &[3])], &[0], 1)
            .unwrap()
            .is_none()
    );
    // A new key twice, across pieces: seen once all pieces are in.
    let index = BaselineIndex::read(&old, &key, "_row_hash")
        .unwrap()
        .unwrap();
    let mut matches = PieceMatches::default();
    for piece in [batch(&["x", "a"], &[9, 1]), batch(&["x"], &[9])] {
        assert!(matches.add(index.look_up(&[piece], &[0], 1).unwrap().unwrap()));
    }
    assert_eq!(index.finish(matches), None);
    // A baseline that repeats a key has no index.
    let (_file, twice) = parquet(&[batch(&["a", "a"], &[1, 2])]);
    assert!(
        BaselineIndex::read(&twice, &key, "_row_hash")
            .unwrap()
            .is_none()
    );
}

/// Many rows, so that buckets hold several entries and parts many buckets.
#[test]
fn every_row_of_a_large_baseline_is_found_in_its_bucket() {
    let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let hashes: Vec<u64> = (0..5000).collect();
    let (_file, old) = parquet(&[batch(&refs, &hashes)]);
    let key = ["sku".to_string()];
    let index = BaselineIndex::read(&old, &key, "_row_hash")
        .unwrap()
        .unwrap();
    // Every other key, in reverse; those that end in 1, 3 or 5 changed.
    let today: Vec<&str> = refs.iter().rev().step_by(2).copied().collect();
    let today_hashes: Vec<u64> = today
        .iter()
        .map(|k| {
            let i: u64 = k[1..].parse().unwrap();
            if matches!(i % 10, 1 | 3 | 5) {
                i + 1
            } else {
                i
            }
        })
        .collect();
    let mut matches = PieceMatches::default();
    matches.add(
        index
            .look_up(&[batch(&today, &today_hashes)], &[0], 1)
            .unwrap()
            .unwrap(),
    );
    let matched = index.finish(matches).unwrap();
    assert!(matched.new.is_empty());
    assert_eq!(matched.deleted, (0..5000).step_by(2).collect::<Vec<u32>>());
    assert_eq!(matched.changed.len(), 1500);
    assert_eq!(matched.changed[0], (2, 4995));
    assert_eq!(matched.unchanged, 1000);
}

#[test]
fn a_repeated_key_is_left_to_the_join() {
    let (_file, old) = parquet(&[batch(&["a", "b"], &[1, 2])]);
    let new = [batch(&["a", "a"], &[1, 2])];
    assert!(
        match_positions(&new, &["sku".to_string()], "_row_hash", &old)
            .unwrap()
            .is_none()
    );
}

#[test]
fn string_encodings_match_alike() {
    let (_file, old) = parquet(&[batch(&["a", "b"], &[1, 2])]);
    let view = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("sku", DataType::Utf8View, false),
            Field::new("_row_hash", DataType::UInt64, false),
        ])),
        vec![
            cast(
                &(Arc::new(StringArray::from(vec!["b", "a"])) as ArrayRef),
                &DataType::Utf8View,
            )
            .unwrap(),
            Arc::new(UInt64Array::from(vec![2, 1])),
        ],
    )
    .unwrap();
    let matched = match_positions(&[view], &["sku".to_string()], "_row_hash", &old)
        .unwrap()
        .unwrap();
    assert_eq!(matched.unchanged, 2);
    assert!(matched.new.is_empty() && matched.deleted.is_empty() && matched.changed.is_empty());
}

#[test]
fn ranges_of_positions() {
    let ranges: Vec<_> = consecutive_ranges(&[10, 11, 12, 15, 17, 18], 10).collect();
    assert_eq!(ranges, vec![0..3, 5..6, 7..9]);
}
