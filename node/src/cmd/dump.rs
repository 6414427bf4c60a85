//! DUMP and RESTORE (and RESTORE-ASKING): serialized values in Redis's DUMP format.

use super::Handler;

/// Commands of this family.
pub const COMMANDS: &[(&str, Handler)] = &[];
