//! One side of a comparison (today's rows or the baseline's) as the delta builder reads it:
//! the rows a strategy took, in the batches it took them in, found by their place among them.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::DataType;

use crate::engine;
use crate::error::{Error, Result};

/// One side's rows, in the batches they were taken in: the `n`th row taken is found by its
/// batch and its row there.
pub struct Side<'a> {
    batches: &'a [RecordBatch],
    /// The first row of each batch, counted over the side.
    starts: Vec<usize>,
    /// Each column's place in the first batch: looking names up in the schema is linear in
    /// the columns, and the builder looks up every column (10,000 of them in a wide table).
    places: HashMap<&'a str, usize>,
}

impl<'a> Side<'a> {
    /// The side of the rows in `batches`, in order.
    pub fn new(batches: &'a [RecordBatch]) -> Self {
        let starts = batches
            .iter()
            .scan(0, |start, b| {
                let first = *start;
                *start += b.num_rows();
                Some(first)
            })
            .collect();
        let places = batches
            .first()
            .map_or_else(HashMap::new, |b| engine::column_places(b.schema_ref()));
        Side {
            batches,
            starts,
            places,
        }
    }

    /// (batch, row) of the side's `n`th row.
    pub fn locate(&self, n: usize) -> (usize, usize) {
        let batch = self.starts.partition_point(|&s| s <= n) - 1;
        (batch, n - self.starts[batch])
    }

    /// The side's column `name`, one array per batch; None when a batch lacks it.
    pub fn column(&self, name: &str) -> Option<Vec<&ArrayRef>> {
        let place = self.places.get(name).copied();
        self.batches
            .iter()
            .map(|b| match place {
                // The batches of a side share a schema; one that does not is looked up.
                Some(i)
                    if b.schema_ref()
                        .fields()
                        .get(i)
                        .is_some_and(|f| f.name() == name) =>
                {
                    Some(b.column(i))
                }
                _ => b.column_by_name(name),
            })
            .collect()
    }

    /// The side's column `name` at the side's rows `at`, as one array; None when the side
    /// lacks the column.
    pub fn gather(&self, name: &str, at: &[usize]) -> Result<Option<ArrayRef>> {
        let Some(column) = self.column(name) else {
            return Ok(None);
        };
        let arrays: Vec<&dyn Array> = column.iter().map(|a| a.as_ref() as &dyn Array).collect();
        if arrays.is_empty() {
            return Ok(Some(new_null_array(&DataType::Null, 0)));
        }
        let indices: Vec<(usize, usize)> = at.iter().map(|&n| self.locate(n)).collect();
        interleave(&arrays, &indices)
            .map(Some)
            .map_err(|e| arrow_error(e, "building the delta"))
    }
}

/// An Arrow error while `doing` something, as the engine's errors are told.
pub fn arrow_error(e: datafusion::arrow::error::ArrowError, doing: &'static str) -> Error {
    engine::error(doing, e.into())
}
