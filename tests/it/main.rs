//! Integration tests: the real binary on real files, asserting exact outputs.

mod bad_input;
mod composite_keys;
mod corpus;
mod faults;
mod guards;
mod inventory;
mod inventory_data;
mod kill;
mod matching;
mod memory;
mod modes;
mod races;
mod restore;
mod review_findings;
mod s3;
mod schema_drift;
mod sources;
mod sql_logic;
mod store_sync;
mod strategies;
mod streamed;
mod tolerance;
mod vacuum;
mod validation;
mod verify;
mod workdir;
