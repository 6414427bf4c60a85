//! slotgate-protocol: the RESP wire format, key→slot hashing and the command table.
//!
//! Shared by the node, the proxy, the benchmark tool and the tests so that all of them agree
//! on framing, on which arguments are keys and on which slot a key lives in.
pub mod commands;
pub mod resp;
pub mod slot;

pub use commands::{
    key_positions, keys_slot, lookup, resolve, CommandSpec, KeyPositions, KeyRule, KeysError,
    SlotCheck,
};
pub use resp::{decode_frame, frame_len, parse_command, Frame, Limits, Parsed, ProtocolError};
pub use slot::{key_slot, SLOT_COUNT};
