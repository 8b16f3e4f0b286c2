//! Sources on S3: `path: s3://bucket/feeds/inventory-*.csv`. The matching objects are listed,
//! picked like local files (sorted by key; `files: newest` takes the last), and downloaded into
//! a temporary folder so that every reader works on them as on local files; messages name them
//! by their URL.

use std::io::Write;
use std::path::Path as FsPath;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{FileSelection, FileToRead};
use crate::error::{Error, Result};

/// Load a table's source files, local or on S3 (downloaded to a temporary folder first).
pub async fn load_anywhere(
    table: &str,
    pattern: &str,
    selection: FileSelection,
    options: &super::SourceOptions,
    allow_empty: bool,
    progress: &dyn super::LoadProgress,
) -> Result<super::LoadedSource> {
    if !crate::cloud::is_url(pattern) {
        return super::load(table, pattern, selection, options, allow_empty, progress);
    }
    let dir = tempfile::Builder::new()
        .prefix("tidemark-source-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let files = fetch(table, pattern, selection, dir.path()).await?;
    super::load_files(&files, options, allow_empty, progress)
}

/// Download the objects `pattern` (an `s3://` URL, possibly with a glob in its key) names into
/// `dir`.
pub async fn fetch(
    table: &str,
    pattern: &str,
    selection: FileSelection,
    dir: &FsPath,
) -> Result<Vec<FileToRead>> {
    let (bucket_part, key_pattern) = split_url(pattern)?;
    let remote = crate::cloud::open(bucket_part)?;
    let store_error = |e: object_store::Error| Error::Store {
        location: pattern.to_string(),
        message: e.to_string(),
    };
    let mut keys: Vec<Path> = if key_pattern.contains(['*', '?', '[']) {
        let glob = glob::Pattern::new(key_pattern).map_err(|e| Error::Usage {
            message: format!("table {table}: source path {pattern} is not a valid glob: {e}"),
        })?;
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        // List from the folder of the first wildcard, then match whole keys.
        let literal = &key_pattern[..key_pattern.find(['*', '?', '[']).unwrap_or(0)];
        let folder = literal.rfind('/').map_or("", |i| &literal[..i]);
        let prefix = (!folder.is_empty()).then(|| Path::from(folder));
        remote
            .bucket
            .list(prefix.as_ref())
            .map_ok(|meta| meta.location)
            .try_filter(|key| std::future::ready(glob.matches_with(key.as_ref(), options)))
            .try_collect()
            .await
            .map_err(store_error)?
    } else {
        let key = Path::from(key_pattern);
        match remote.bucket.head(&key).await {
            Ok(_) => vec![key],
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(store_error(e)),
        }
    };
    if keys.is_empty() {
        return Err(Error::SourceMissing {
            table: table.to_string(),
            pattern: pattern.to_string(),
        });
    }
    keys.sort();
    if selection == FileSelection::Newest {
        keys.drain(..keys.len() - 1);
    }
    let mut files = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let url = remote.url_of(key);
        // The file name keeps its extension, which says how to read it.
        let local = dir.join(format!("{i}-{}", key.filename().unwrap_or("object")));
        download(remote.bucket.as_ref(), key, &url, &local).await?;
        files.push(FileToRead {
            local,
            shown: url.into(),
        });
    }
    Ok(files)
}

/// `s3://bucket/a/b*.csv` → (`s3://bucket`, `a/b*.csv`).
fn split_url(pattern: &str) -> Result<(&str, &str)> {
    let after_scheme = pattern.find("://").map_or(0, |i| i + 3);
    match pattern[after_scheme..].find('/') {
        Some(slash) if slash > 0 && after_scheme + slash + 1 < pattern.len() => Ok((
            &pattern[..after_scheme + slash],
            &pattern[after_scheme + slash + 1..],
        )),
        _ => Err(Error::Usage {
            message: format!(
                "source path {pattern}: name an object or a glob in a bucket, e.g. s3://bucket/feeds/inventory-*.csv"
            ),
        }),
    }
}

/// Stream one object (named `url` in messages) into a local file.
async fn download(bucket: &dyn ObjectStore, key: &Path, url: &str, local: &FsPath) -> Result<()> {
    let store_error = |e: object_store::Error| Error::Store {
        location: url.to_string(),
        message: e.to_string(),
    };
    let mut stream = bucket.get(key).await.map_err(store_error)?.into_stream();
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(local).map_err(|e| Error::io(local, e))?);
    while let Some(chunk) = stream.try_next().await.map_err(store_error)? {
        file.write_all(&chunk).map_err(|e| Error::io(local, e))?;
    }
    file.flush().map_err(|e| Error::io(local, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_splits_into_bucket_and_key_pattern() {
        assert_eq!(
            split_url("s3://feeds/daily/inv-*.csv").unwrap(),
            ("s3://feeds", "daily/inv-*.csv")
        );
        assert!(split_url("s3://feeds").is_err());
        assert!(split_url("s3://feeds/").is_err());
    }
}
