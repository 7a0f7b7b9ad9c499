//! keyward: an SSH key agent with a certificate and policy store.
//!
//! The binaries in `src/bin` only parse arguments and call into these modules.

pub mod activation;
pub mod agent;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod files;
pub mod harden;
pub mod install;
pub mod keys;
pub mod launch;
pub mod native;
pub mod paths;
pub mod policy;
pub mod rotation;
pub mod scheduler;
pub mod service;
pub mod socket;
pub mod sshbuf;
pub mod store;
