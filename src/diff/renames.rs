//! Key changes (`renames`): which removed row and which added row are one row whose key
//! changed (a SKU re-coded by the vendor).
//!
//! A DELETED row and a NEW row pair when every compared column holds the same value on both
//! (null the same as null; a column with a tolerance compared exactly) and no other DELETED
//! or NEW row holds those values: a pairing that could go two ways is not made, and those
//! rows stay DELETED and NEW. Nothing pairs when no column is compared (every row would
//! look alike). `sql/renames.sql` states the same rule as a query, the oracle this is
//! tested against.

use std::collections::HashMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};

use super::side::{Side, arrow_error};
use crate::error::Result;

/// The pairs (today's row, the baseline's row) among `added` (rows of `new`) and `removed`
/// (rows of `old`) whose `compared` values are the same and held by no other added or
/// removed row, in the order of `added`.
pub fn pair(
    compared: &[String],
    (new, added): (&Side, &[usize]),
    (old, removed): (&Side, &[usize]),
) -> Result<Vec<(usize, usize)>> {
    if compared.is_empty() || added.is_empty() || removed.is_empty() {
        return Ok(Vec::new());
    }
    let values = |side: &Side, at: &[usize]| -> Result<Option<Vec<ArrayRef>>> {
        compared.iter().map(|c| side.gather(c, at)).collect()
    };
    let (Some(added_values), Some(removed_values)) = (values(new, added)?, values(old, removed)?)
    else {
        return Ok(Vec::new());
    };
    // The baseline's rows are cast to today's types, so one encoding serves both sides.
    let fields = (added_values.iter())
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(|e| arrow_error(e, "pairing renames"))?;
    let encode = |columns: &[ArrayRef]| {
        converter
            .convert_columns(columns)
            .map_err(|e| arrow_error(e, "pairing renames"))
    };
    let (added_rows, removed_rows) = (encode(&added_values)?, encode(&removed_values)?);
    let sole_holders = sole_holders(&removed_rows);
    let added_holders = holders(&added_rows);
    Ok((0..added_rows.num_rows())
        .filter(|&i| added_holders[added_rows.row(i).data()] == 1)
        .filter_map(|i| {
            let r = *sole_holders.get(added_rows.row(i).data())?;
            Some((added[i], removed[r]))
        })
        .collect())
}

/// How many rows hold each encoded content.
fn holders(rows: &Rows) -> HashMap<&[u8], usize> {
    let mut count = HashMap::with_capacity(rows.num_rows());
    for row in rows.iter() {
        *count.entry(row.data()).or_default() += 1;
    }
    count
}

/// For each content exactly one row holds, that row.
fn sole_holders(rows: &Rows) -> HashMap<&[u8], usize> {
    let count = holders(rows);
    (rows.iter().enumerate())
        .filter(|(_, row)| count[row.data()] == 1)
        .map(|(i, row)| (row.data(), i))
        .collect()
}
