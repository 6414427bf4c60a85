//! Shared helpers for the end-to-end tests: spawning real processes on free loopback ports.
