//! The pipeline file: parsed as plain serde types (`raw`), then validated in one pass
//! ([`load`]) into a [`Plan`] ([`plan`]): resolved paths, parsed types, tables in dependency
//! order, and every problem reported at once with its line.

mod load;
mod plan;
mod raw;

pub use load::load;
pub use plan::*;
pub use raw::{Case, Duplicates, OnInvalid, YamlScalar};
