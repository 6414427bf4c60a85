//! Redis's serialization formats: the DUMP payload (RDB value encoding + RDB version + CRC64).
