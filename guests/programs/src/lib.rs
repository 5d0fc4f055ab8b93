//! Shared helpers for the test guest programs (one program per file under `src/bin`).
