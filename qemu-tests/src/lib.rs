//! Shared helpers of the QEMU integration tests (in `tests/`).
