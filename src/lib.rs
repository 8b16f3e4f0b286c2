//! tidemark turns "load everything and rebuild" data feeds into incremental ones: each run
//! loads a table's snapshot into Apache Arrow, compares it by key and row hash with the stored
//! baseline, writes only what changed (with the reason), and commits the snapshot as the next
//! version of a Parquet baseline.
//!
//! The data flow follows the modules: [`spec`] (pipeline file) → [`source`] (files to Arrow) →
//! transform (SQL) → [`diff`] (row hash, classification) → [`store`] (versioned baselines) and
//! [`sink`] (delta files); [`pipeline`] drives one table end to end, stage by stage, [`query`] exposes the store to SQL.
#![warn(missing_docs)]

pub mod cli;
pub mod cloud;
pub mod deliver;
pub mod diff;
pub mod engine;
pub mod error;
pub mod normalize;
pub mod parallel;
pub mod pipeline;
pub mod query;
pub mod restore;
pub mod sink;
pub mod source;
pub mod spec;
pub mod store;
pub mod validate;

pub use error::{Error, Result};
