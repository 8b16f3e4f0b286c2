//! Places named by URL (`s3://bucket/prefix`): the store, sources and outputs can live on S3 or
//! any S3-compatible service, through object_store's S3 client.
//!
//! The client is configured from the usual AWS environment variables: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`), and
//! `AWS_ENDPOINT_URL` for an S3-compatible service (MinIO, R2, Ceph, moto...). An endpoint given
//! as `http://` is used as given: naming a plain-HTTP endpoint is the consent object_store
//! otherwise asks for with `AWS_ALLOW_HTTP=true`.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// Whether `location` names a place by URL rather than a local path.
pub fn is_url(location: &str) -> bool {
    location.contains("://")
}

/// A bucket, and a place inside it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `s3://bucket`: where DataFusion finds the bucket's object store.
    pub bucket_url: url::Url,
    /// The bucket's object store (keys from the bucket's root).
    pub bucket: Arc<dyn ObjectStore>,
    /// The key (or key prefix) the URL names inside the bucket, without a trailing `/`.
    pub key: Path,
}

impl Remote {
    /// The URL of a key of this bucket, as people and DataFusion read it.
    pub fn url_of(&self, key: &Path) -> String {
        format!("{}/{key}", self.bucket_url.as_str().trim_end_matches('/'))
    }
}

/// Open the bucket of `location` (`s3://bucket/some/key`).
pub fn open(location: &str) -> Result<Remote> {
    let usage = |message: String| Error::Usage { message };
    let parsed = url::Url::parse(location)
        .map_err(|e| usage(format!("{location}: not a valid URL ({e})")))?;
    if parsed.scheme() != "s3" {
        return Err(usage(format!(
            "{location}: tidemark reads and writes local paths and s3:// URLs; `{}://` is not supported",
            parsed.scheme()
        )));
    }
    let bucket_name = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
        usage(format!(
            "{location}: the URL names no bucket (s3://BUCKET/prefix)"
        ))
    })?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket_name);
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    let bucket = builder.build().map_err(|e| Error::Store {
        location: location.to_string(),
        message: format!(
            "cannot open the bucket: {e}. Check the AWS_* environment variables (credentials, AWS_REGION, AWS_ENDPOINT_URL for an S3-compatible service)."
        ),
    })?;
    let bucket_url = url::Url::parse(&format!("s3://{bucket_name}"))
        .map_err(|e| usage(format!("{location}: not a valid bucket URL ({e})")))?;
    let key = Path::parse(parsed.path().trim_matches('/')).map_err(|e| {
        usage(format!(
            "{location}: not a valid object key ({e}); keys may not contain empty or `.` segments"
        ))
    })?;
    Ok(Remote {
        bucket_url,
        bucket: Arc::new(bucket),
        key,
    })
}

/// Write `bytes` to the object `location` names (replacing it).
pub async fn put(location: &str, bytes: bytes::Bytes) -> Result<()> {
    let remote = open(location)?;
    remote
        .bucket
        .put(&remote.key, bytes.into())
        .await
        .map_err(|e| Error::Store {
            location: location.to_string(),
            message: e.to_string(),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_its_bucket_and_key() {
        let remote = open("s3://feeds/daily/inventory").unwrap();
        assert_eq!(remote.bucket_url.as_str(), "s3://feeds");
        assert_eq!(remote.key.as_ref(), "daily/inventory");
        assert_eq!(
            remote.url_of(&Path::from("daily/inventory/x.csv")),
            "s3://feeds/daily/inventory/x.csv"
        );
        assert_eq!(open("s3://feeds").unwrap().key.as_ref(), "");
    }

    #[test]
    fn other_schemes_and_missing_buckets_are_usage_errors() {
        let gcs = open("gs://feeds/x").unwrap_err().to_string();
        assert!(gcs.contains("`gs://` is not supported"), "{gcs}");
        let nobucket = open("s3:///x").unwrap_err().to_string();
        assert!(nobucket.contains("names no bucket"), "{nobucket}");
    }
}
