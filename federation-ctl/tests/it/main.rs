//! Process tests for the controller and CLI.

mod crds;
