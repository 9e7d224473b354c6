#!/usr/bin/env bash
# The project's test command (what .ci/run runs): installs the test oracles if missing, then
# checks formatting and lints and runs the whole test suite. Oracle tests are required here:
# with EC2AZURE_REQUIRE_ORACLES set, a missing qemu-img or libvhdi fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
# The report's screenshot test renders with Debian's Chromium (installed above).
EC2AZURE_CHROMIUM="${EC2AZURE_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
export EC2AZURE_CHROMIUM
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# The fuzz targets are their own workspace: make sure they still build (their bodies run over
# the seeds in the test suite).
cargo check --quiet --manifest-path fuzz/Cargo.toml
EC2AZURE_REQUIRE_ORACLES=1 cargo test
