//! End-to-end tests that start the real `barge` binary and drive it with the official Rust
//! SDK, `aws-sdk-batch`, over plain HTTP on loopback. Everything lives in `tests/`; this
//! library is empty. The binary is `$BARGE_BIN` or `target/release/barge` (build it first
//! with `cargo build --release -p barge`; `scripts/test.sh` does).
