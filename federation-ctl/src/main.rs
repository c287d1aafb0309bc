//! `federation-ctl`: the controller and the operator CLI.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
