//! The side-by-side runner (`slotgate-bench compare`).
use anyhow::Result;

/// Options of `compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {}

/// Runs the comparison.
pub fn main(_args: CompareArgs) -> Result<()> {
    Ok(())
}
