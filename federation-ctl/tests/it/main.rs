//! Process tests for the controller and CLI.
