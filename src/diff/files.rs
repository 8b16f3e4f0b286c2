//! The ad-hoc diff of two files without a store (`tidemark diff OLD NEW`): the old file plays
//! the baseline, the new one today's snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::logical_expr::cast;
use datafusion::prelude::ident;

use super::keys::{check_null_keys, deduplicate};
use super::{Counts, DiffSettings, sql};
use crate::engine;
use crate::error::{Error, Result};
use crate::source;
use crate::spec::{ChangeKind, TablePlan};
use crate::validate;

/// Diff two files without a store (`tidemark diff`): `old` plays the baseline, the table's
/// source the new snapshot. Returns the shaped delta and the counts.
pub async fn diff(
    old: &std::path::Path,
    old_options: &source::SourceOptions,
    table: &TablePlan,
    include: &[ChangeKind],
) -> Result<(SchemaRef, Vec<RecordBatch>, Counts)> {
    let name = table.name.as_str();
    let ctx = engine::session();
    let (old_loaded, loaded) = load_in_common_types(&ctx, old, old_options, table).await?;
    // Files that are deltas themselves hold columns named as the delta's change columns: the
    // delta's take names neither file uses.
    let mut table = table.clone();
    let taken = |c: &str| {
        old_loaded.schema.field_with_name(c).is_ok() || loaded.schema.field_with_name(c).is_ok()
    };
    let cc = &mut table.change_columns;
    cc.type_column = free_name(&cc.type_column, taken);
    cc.reason_column = free_name(&cc.reason_column, taken);
    let key = table.key.clone();
    cc.previous_prefix = free_name(&cc.previous_prefix, |prefix| {
        (key.iter()).any(|k| taken(&format!("{prefix}{k}")))
    });
    let table = &table;
    let origin = loaded.origin();
    let columns: Vec<String> = source::column_names(&loaded.schema);
    validate::check_columns(table, &columns, &origin, &columns, &origin)?;
    let old_columns: Vec<String> = source::column_names(&old_loaded.schema);
    for k in &table.key {
        if !old_columns.contains(k) {
            return Err(Error::MissingColumn {
                table: name.to_string(),
                column: k.clone(),
                setting: "key".into(),
                origin: old_loaded.origin(),
                available: old_columns,
            });
        }
    }
    check_null_keys(
        table,
        &old_loaded.batches,
        &old_loaded.origin(),
        &old_loaded.rows,
    )?;
    deduplicate(
        &ctx,
        (table, "the old file"),
        &old_loaded.batches,
        &old_loaded.origin(),
        &old_loaded.rows,
    )
    .await?;
    let types: HashMap<String, DataType> = loaded
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let rows = loaded.rows.clone();
    check_null_keys(table, &loaded.batches, &origin, &rows)?;
    engine::register_batches(
        &ctx,
        "incoming",
        loaded.schema.clone(),
        loaded.batches.clone(),
    )?;
    // With `duplicates: error` (the ad-hoc diff's setting) this only ever reports a repeat.
    deduplicate(
        &ctx,
        (table, "the new file"),
        &loaded.batches,
        &origin,
        &rows,
    )
    .await?;
    let rows_in = loaded.num_rows() as u64;
    // The old file's shared columns are read as the new file's types (floats, where the new
    // file's were made floats above).
    let mut casts = Vec::new();
    for f in old_loaded.schema.fields() {
        match types.get(f.name()) {
            Some(t) if t != f.data_type() => {
                casts.push(cast(ident(f.name()), t.clone()).alias(f.name()))
            }
            _ => casts.push(ident(f.name())),
        }
    }
    let old_frame = ctx
        .read_batches(old_loaded.batches.clone())
        .and_then(|f| f.select(casts))
        .map_err(engine::context(name, "reading the old file"))?;
    let old_batches = old_frame.collect().await.map_err(|e| Error::SourceData {
        path: old.to_path_buf(),
        row: None,
        column: None,
        message: format!("its values do not fit the new file's column types: {e}"),
    })?;
    let old_schema = if let Some(b) = old_batches.first() {
        b.schema()
    } else {
        old_loaded.schema.clone()
    };
    engine::register_batches(&ctx, "baseline", old_schema, old_batches)?;
    let compared: Vec<String> = table
        .compare
        .resolve(&columns, &table.key)
        .into_iter()
        .filter(|c| old_columns.contains(c))
        .collect();
    sql::register_hash_views(&ctx, (name, &table.key), &compared, &[], &types, false).await?;
    let settings = DiffSettings {
        key: table.key.clone(),
        compared,
        columns,
        baseline_columns: old_columns,
        include_unchanged: include.contains(&ChangeKind::Unchanged),
        tolerance: Vec::new(),
        renames: table.renames,
    };
    let delta = sql::classify(&ctx, &settings, rows_in).await?;
    let frame = crate::sink::shape::shape_output(table, &delta, include, None, &types).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .map_err(engine::context(name, "shaping the delta"))?;
    Ok((schema, batches, delta.counts))
}

/// Load both files, each column both hold in one type for both: as loaded when the types agree,
/// else as written (text) when either side is not a number, else a number type that holds both.
async fn load_in_common_types(
    ctx: &datafusion::prelude::SessionContext,
    old: &std::path::Path,
    old_options: &source::SourceOptions,
    table: &TablePlan,
) -> Result<(source::LoadedSource, source::LoadedSource)> {
    let name = table.name.as_str();
    let mut old_loaded = load_old(old, old_options, table, &[])?;
    let mut loaded = load_new(table, &[]).await?;
    // A column the two files hold in types that cannot both be read as the other's: read again
    // as written, as text (`0012` and `12` differ; `abc` against `5` is a change, not an error).
    let as_text: Vec<String> = shared_types(&old_loaded.schema, &loaded.schema)
        .filter(|(_, o, n)| !(o.is_numeric() && n.is_numeric()))
        .map(|(c, _, _)| c)
        .collect();
    // Only a file that did not read such a column as text already is read again.
    let reads_all_as_text = |side: &source::LoadedSource| {
        as_text.iter().all(|c| {
            side.schema
                .field_with_name(c)
                .is_ok_and(|f| f.data_type() == &DataType::Utf8)
        })
    };
    if !reads_all_as_text(&old_loaded) {
        old_loaded = load_old(old, old_options, table, &as_text)?;
    }
    if !reads_all_as_text(&loaded) {
        loaded = load_new(table, &as_text).await?;
    }
    // Numbers of two kinds compare in one type that holds both: a wide decimal for integers and
    // decimals (no integer above 2^53 rounded), else float64.
    let numbers: Vec<(String, DataType)> = shared_types(&old_loaded.schema, &loaded.schema)
        .filter(|(_, o, n)| o.is_numeric() && n.is_numeric())
        .map(|(c, o, n)| (c, common_number(&o, &n)))
        .collect();
    if !numbers.is_empty() {
        loaded.batches = cast_columns(ctx, &loaded.batches, &numbers)
            .await
            .map_err(engine::context(name, "reading the new file"))?;
        if let Some(first) = loaded.batches.first() {
            loaded.schema = first.schema();
        }
    }
    Ok((old_loaded, loaded))
}

/// `options` with the columns `as_text` declared text.
fn with_text(options: &source::SourceOptions, as_text: &[String]) -> source::SourceOptions {
    let mut options = options.clone();
    for c in as_text {
        options.columns.retain(|(declared, _)| declared != c);
        options.columns.push((c.clone(), DataType::Utf8));
    }
    options
}

/// Load the old file (a cell that does not fit is an error: an ad-hoc diff has no rejects
/// file), reading the columns `as_text` as text; in the form values are compared in.
fn load_old(
    old: &std::path::Path,
    old_options: &source::SourceOptions,
    table: &TablePlan,
    as_text: &[String],
) -> Result<source::LoadedSource> {
    let mut loaded = source::load(
        &table.name,
        &old.display().to_string(),
        source::FileSelection::Newest,
        &with_text(old_options, as_text),
        false,
        &source::Unobserved,
    )?
    .strict()?;
    comparable_side(&mut loaded)?;
    Ok(loaded)
}

/// Load the new file (the table's source) as [`load_old`] loads the old one.
async fn load_new(table: &TablePlan, as_text: &[String]) -> Result<source::LoadedSource> {
    let mut loaded = source::remote::load_anywhere(
        &table.name,
        &table.source_path,
        table.files,
        &with_text(&table.source, as_text),
        false,
        &source::Unobserved,
    )
    .await?
    .strict()?;
    comparable_side(&mut loaded)?;
    Ok(loaded)
}

/// The columns both schemas hold in different types: name, old type, new type.
fn shared_types<'a>(
    old: &'a Schema,
    new: &'a Schema,
) -> impl Iterator<Item = (String, DataType, DataType)> + 'a {
    old.fields().iter().filter_map(|o| {
        let n = new.field_with_name(o.name()).ok()?;
        (o.data_type() != n.data_type()).then(|| {
            (
                o.name().clone(),
                o.data_type().clone(),
                n.data_type().clone(),
            )
        })
    })
}

/// The type two numeric types compare in: decimal(38, the larger scale) when both are integers
/// or decimals, else float64.
fn common_number(a: &DataType, b: &DataType) -> DataType {
    let exact = |t: &DataType| match t {
        DataType::Decimal128(_, scale) => Some(*scale),
        t if t.is_integer() => Some(0),
        _ => None,
    };
    match (exact(a), exact(b)) {
        (Some(x), Some(y)) => DataType::Decimal128(38, x.max(y)),
        _ => DataType::Float64,
    }
}

/// `batches` with each of `columns` cast to its type.
async fn cast_columns(
    ctx: &datafusion::prelude::SessionContext,
    batches: &[RecordBatch],
    columns: &[(String, DataType)],
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let exprs: Vec<_> = first
        .schema()
        .fields()
        .iter()
        .map(|f| match columns.iter().find(|(c, _)| c == f.name()) {
            Some((_, to)) => cast(ident(f.name()), to.clone()).alias(f.name()),
            None => ident(f.name()),
        })
        .collect();
    ctx.read_batches(batches.to_vec())?
        .select(exprs)?
        .collect()
        .await
}

/// `wanted`, or `diff_<wanted>` (then with a number) when `taken` says a file uses it.
fn free_name(wanted: &str, taken: impl Fn(&str) -> bool) -> String {
    std::iter::once(wanted.to_string())
        .chain((1..).map(|n| match n {
            1 => format!("diff_{wanted}"),
            n => format!("diff_{wanted}_{n}"),
        }))
        .find(|name| !taken(name))
        .expect("some name is free")
}

/// A loaded file's values in the form they are compared in (see [`super::comparable`]).
fn comparable_side(side: &mut source::LoadedSource) -> Result<()> {
    side.batches = side
        .batches
        .iter()
        .map(|b| super::comparable::comparable_batch(b, &[]))
        .collect::<Result<Vec<_>>>()?;
    side.schema = super::comparable::comparable_schema(&side.schema, &[]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_two_kinds_compare_in_a_type_that_holds_both() {
        use DataType::*;
        assert_eq!(common_number(&Int64, &Decimal128(12, 2)), Decimal128(38, 2));
        assert_eq!(common_number(&Decimal128(20, 0), &Int64), Decimal128(38, 0));
        assert_eq!(common_number(&Int64, &Float64), Float64);
        assert_eq!(common_number(&Decimal128(12, 2), &Float64), Float64);
    }
}
