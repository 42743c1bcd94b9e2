//! Browser tests of the web console (`/console`): each test starts the real `barge` binary
//! (`$BARGE_BIN` or `target/release/barge`; build it first with `cargo build --release -p
//! barge`) and a `chromedriver` (`$CHROMEDRIVER` or `/usr/bin/chromedriver`) driving a headless
//! Chromium (`$CHROMIUM` or `/usr/bin/chromium`, `--no-sandbox`, downloads disabled), and
//! clicks through the pages as a person would. Everything lives in `tests/`; this library is
//! empty.
//!
//! Artefacts: screenshots of the main pages are written as PNG files under
//! `target/console-screenshots/` (overview, job list, job page, forms, login), for a look at
//! what the tests saw.
