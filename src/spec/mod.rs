//! The pipeline file: parsed as plain serde types (`raw`), then validated in one pass
//! ([`load`]) into a [`Plan`] ([`plan`]): resolved paths, parsed types, tables in dependency
//! order, and every problem reported at once with its line; names and paths that would collide
//! ([`collisions`]) are refused.

mod collisions;
mod destinations;
mod load;
mod plan;
mod raw;
pub mod secrets;

pub use collisions::output_collisions;
pub use load::load;
pub use plan::*;
pub use raw::{Case, Duplicates, OnInvalid, YamlScalar};
