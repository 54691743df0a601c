//! The demo mesh (work in progress).

pub mod app;

/// Options of `pilotfish demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs the demo mesh until Ctrl-C.
pub fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
