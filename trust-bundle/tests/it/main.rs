//! Process- and socket-level tests of the trust-bundle library and CLI.

// Helpers outside #[test] functions unwrap too: a failing setup step should stop the test.
#![allow(clippy::unwrap_used)]

mod cli;
mod handshake;
mod resumption;
mod rotation;
