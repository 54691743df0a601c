//! A demo service (work in progress).

/// Options of a demo service.
#[derive(Debug, clap::Args)]
pub struct AppArgs {}

/// Runs a demo service.
pub fn run(_args: AppArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
