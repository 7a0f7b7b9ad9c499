//! Integration tests for keyward: they drive the built `keyward-agent` and `keyward` binaries with
//! the real OpenSSH tools (`ssh-add`, `ssh-keygen`, `ssh`, `sshd`) and a raw protocol client.
//!
//! A missing tool is a failure, never a skip: `scripts/test` installs everything needed.

mod env;
mod procstat;
mod sshd;
mod util;
mod wire;

mod agent_certs;
mod agent_cmdline;
mod agent_constraints;
mod agent_extensions;
mod agent_hardening;
mod agent_keys;
mod agent_keytypes;
mod agent_lock;
mod agent_login;
mod agent_pkcs11;
mod agent_protocol;
mod agent_sign;
mod agent_sk;
mod agent_sockets;
mod audit_trail;
mod cert_atomic;
mod cert_errors;
mod cert_export_dirs;
mod cert_foreign;
mod cert_hook_group;
mod cert_persist;
mod cert_renew;
mod cert_seed;
mod cli_keys_daemon;
mod cli_keys_errors;
mod cli_keys_import;
mod cli_keys_login;
mod cli_keys_seed;
mod cli_start;
mod control_privilege;
mod fuzz_corpus;
mod hardening_attacks;
mod hardening_load;
mod hardening_load_drip;
mod hardening_load_pipeline;
mod hardening_memory;
mod key_certs;
mod policy_destination;
mod policy_exe_fork;
mod policy_forwarded_lock;
mod policy_forwarding;
mod policy_hosts;
mod policy_limits;
mod policy_persist;
mod policy_purpose;
mod policy_restrict;
mod policy_usage;
mod prop_decode;
mod prop_session;
mod service_activation;
mod service_cli;
mod service_units;
mod socket_trust;
mod store_at_rest;
mod store_crash;
mod store_persist;
mod store_rekey;
