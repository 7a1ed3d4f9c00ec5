//! Integration tests: one binary, read like the spec (SPEC §2–§4, §6).

mod architecture;
mod assembly;
mod cli;
mod collect;
mod extract;
mod faults;
mod hostile;
mod layout;
mod library;
mod locations;
mod mount;
mod packfile;
mod proxy;
mod registry;
mod s3;
mod sources;
mod unpack;
mod util;
