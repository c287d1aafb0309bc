//! A runnable multi-cloud topology: several clusters on one machine.
