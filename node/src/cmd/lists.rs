//! lists commands.

use super::Handler;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[];
