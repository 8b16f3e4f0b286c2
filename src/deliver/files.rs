//! Delta files (`output:`) as a destination: a version's delta shaped for the output (its
//! kinds, `on_delete.set`, labels and columns), written and synced under a temporary name
//! beside its place, renamed into place, and then the cursor advanced.
//!
//! The place is a function of the version alone (its number and its commit time fill the
//! template), so a delivery repeated after a crash writes the same bytes to the same place. A
//! templated place that holds another version's delta (two commits within the same
//! `{timestamp}` second) is left alone: the delta goes beside it, `-v<version>` before the
//! extension. A plain path (a "latest" copy) is replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use crate::diff::Delta;
use crate::error::Result;
use crate::sink::{self, PreparedOutput};
use crate::spec::{OutputPlan, TablePlan};

/// A delta shaped for one output.
pub type Shaped = (SchemaRef, Vec<RecordBatch>);

/// Where a version's delta file goes, and where instead when that place holds another
/// version's delta (a templated path only).
pub fn places(
    template: &str,
    table: &str,
    version: u64,
    committed_at: DateTime<Utc>,
) -> (PathBuf, Option<PathBuf>) {
    let path = PathBuf::from(sink::render_path(template, table, version, committed_at));
    if !template.contains('{') {
        return (path, None);
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let beside = match path.extension() {
        Some(ext) => format!("{stem}-v{version}.{}", ext.to_string_lossy()),
        None => format!("{stem}-v{version}"),
    };
    let beside = path.with_file_name(beside);
    (path, Some(beside))
}

/// Shape `delta` for `output`.
pub async fn shape(table: &TablePlan, output: &OutputPlan, delta: &Delta) -> Result<Shaped> {
    let types: HashMap<String, DataType> = (delta.schema.fields().iter())
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    sink::shape::shape_batches(
        table,
        delta,
        &output.include,
        output.columns.as_deref(),
        &types,
    )
    .await
}

/// A version's delta file, written beside its place, waiting to be put there.
pub struct Prepared {
    file: PreparedOutput,
    elsewhere: Option<PathBuf>,
}

/// Write `shaped` (version `version` of `table`, committed at `committed_at`) beside its place.
pub fn prepare(
    table: &str,
    output: &OutputPlan,
    version: u64,
    committed_at: DateTime<Utc>,
    shaped: &Shaped,
) -> Result<Prepared> {
    let (path, elsewhere) = places(&output.path, table, version, committed_at);
    let (schema, batches) = shaped;
    Ok(Prepared {
        file: sink::prepare_location(&path, schema, batches)?,
        elsewhere,
    })
}

impl Prepared {
    /// Put the file in its place; returns where it went.
    pub async fn publish(self) -> Result<String> {
        self.file.publish_unless_taken(self.elsewhere).await
    }
}

/// The temporary files that runs which died left beside `output`'s places (see
/// [`sink::prepare_location`]), last modified before `before`. A bucket holds none: its files
/// are uploaded whole.
pub fn leftovers(output: &OutputPlan, before: SystemTime) -> Vec<PathBuf> {
    if crate::cloud::is_url(&output.path) {
        return Vec::new();
    }
    let template = Path::new(&output.path);
    let (Some(folder), Some(name)) = (template.parent(), template.file_name()) else {
        return Vec::new();
    };
    let pattern = format!(
        "{}/.{}.*.tmp",
        wildcards(&folder.to_string_lossy()),
        wildcards(&name.to_string_lossy())
    );
    let Ok(found) = glob::glob(&pattern) else {
        return Vec::new();
    };
    found
        .filter_map(|entry| entry.ok())
        .filter(|path| is_temporary_name(path))
        .filter(|path| {
            std::fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < before)
        })
        .collect()
}

/// A path template as a glob pattern: each placeholder any text, everything else literal.
fn wildcards(template: &str) -> String {
    let mut pattern = glob::Pattern::escape(template);
    for placeholder in sink::PLACEHOLDERS {
        pattern = pattern.replace(placeholder, "*");
    }
    pattern
}

/// `.<name>.<32 hex digits>.tmp`: the name [`sink::prepare_location`] gives a file on its way.
fn is_temporary_name(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else {
        return false;
    };
    let Some(rest) = name.strip_suffix(".tmp") else {
        return false;
    };
    match rest.rsplit_once('.') {
        Some((before, id)) => {
            before.starts_with('.') && id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_templated_place_has_a_place_beside_it_and_a_plain_one_has_none() {
        let at = DateTime::parse_from_rfc3339("2024-01-15T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (path, beside) = places("/o/{table}-{timestamp}.csv", "items", 3, at);
        assert_eq!(path, PathBuf::from("/o/items-2024-01-15T10-00-00Z.csv"));
        assert_eq!(
            beside,
            Some(PathBuf::from("/o/items-2024-01-15T10-00-00Z-v3.csv"))
        );
        assert_eq!(
            places("/o/latest.csv", "items", 3, at),
            ("/o/latest.csv".into(), None)
        );
    }

    #[test]
    fn only_temporary_files_of_an_output_are_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("out [1]").join("2024-01-15");
        std::fs::create_dir_all(&folder).unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let leftover = folder.join(format!(".items-2024.csv.{id}.tmp"));
        for name in [
            format!(".items-2024.csv.{id}.tmp"),
            "items-2024.csv".to_string(),
            format!(".items-2024.csv.{}.tmp", &id[..8]),
            format!(".other.csv.{id}.tmp"),
        ] {
            std::fs::write(folder.join(name), "x").unwrap();
        }
        let output = OutputPlan {
            name: "delta".into(),
            path: format!(
                "{}/out [1]/{{date}}/{{table}}-2024.csv",
                dir.path().display()
            ),
            include: Vec::new(),
            columns: None,
        };
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(leftovers(&output, later), vec![leftover]);
        assert!(leftovers(&output, SystemTime::UNIX_EPOCH).is_empty());
    }
}
