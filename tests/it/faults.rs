//! Faults under continuous traffic: each gateway of a linked pair SIGKILLed and restarted in
//! turn, what callers saw (failed calls, time until calls succeed again) recorded. Controller
//! SIGKILLs are `federation::restarting_either_controller_never_fails_a_call` (no call fails).

use std::time::Instant;

use multicloud::cluster::ECHO;
use multicloud::traffic::{Traffic, call_until};

use crate::world::{Result, world};

#[test]
fn a_sigkilled_gateway_restarts_and_calls_recover() -> Result {
    let mut w = world(&["a", "b"], &[])?;
    let listener = {
        let [a, b] = &w.topo.clusters[..] else {
            unreachable!()
        };
        a.join(&b.token()?)?;
        b.export(ECHO)?;
        let listener = a.listener(ECHO)?;
        call_until(listener, "b")?;
        listener
    };
    let traffic = Traffic::start(listener, "b");
    traffic.wait_successes(20)?;
    for (i, who) in [(1, "b's gateway (serving)"), (0, "a's gateway (calling)")] {
        let failed_before = traffic.counts().failed;
        let killed = Instant::now();
        w.topo.clusters[i].kill_gateway();
        w.topo.clusters[i].restart_gateway()?;
        let restarted = killed.elapsed();
        traffic.wait_successes(1)?;
        let recovered = killed.elapsed();
        traffic.wait_successes(20)?;
        let failed = traffic.counts().failed - failed_before;
        println!(
            "SIGKILL {who}: restarted with its config after {restarted:?}, calls succeed again \
             after {recovered:?}, {failed} calls failed meanwhile"
        );
        assert!(recovered < multicloud::PATIENCE);
    }
    let counts = traffic.stop();
    println!(
        "{} calls succeeded, {} failed in all",
        counts.ok, counts.failed
    );
    Ok(())
}
