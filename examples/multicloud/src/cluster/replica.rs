//! More than one controller replica for a cluster (with `leader_election` in its config).

use super::Cluster;
use super::files::{Files, peering_of, relative_to, spawn_controller_process};
use crate::process::Process;
use crate::{Error, Result};

impl Cluster {
    /// Starts another controller replica from the cluster's config, with its own state
    /// directory `state_dir` (relative to the cluster's directory, empty if new) and the same
    /// API socket, which only the replica that leads binds. Returns without waiting for it to
    /// serve: with `leader_election` configured, a standby never does until it leads.
    pub fn spawn_replica(&self, file: &str, state_dir: &str) -> Result<Process> {
        let path = self.shell.work().join(&self.config);
        let text = std::fs::read_to_string(&path)
            .map_err(Error::io(format!("read {}", path.display())))?;
        let mut yaml: String = text
            .lines()
            .filter(|l| !l.starts_with("state_dir:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let socket = relative_to(&self.api, &self.rel);
        yaml.push_str(&format!(
            "state_dir: {state_dir}\napi: {{ socket: {} }}\n",
            socket.display()
        ));
        let config = self.rel.join(format!("{file}.yaml"));
        Files {
            shell: &self.shell,
            show: true,
        }
        .write(&config, &yaml)?;
        spawn_controller_process(
            &self.shell,
            self.netns.as_deref(),
            &self.name,
            file,
            &self.rel,
            &config,
            &self.controller_env,
        )
    }

    /// Makes `replica` (from [`Self::spawn_replica`]) the cluster's controller once it serves;
    /// returns the one it replaces.
    pub fn promote(&mut self, replica: Process) -> Result<Process> {
        self.peering = peering_of(&replica)?;
        Ok(std::mem::replace(&mut self.controller, replica))
    }
}
