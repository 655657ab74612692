//! The `rill` command line.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("rill: not built yet")
}
