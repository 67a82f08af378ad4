"""The Portcullis load comparison: start a fixed backend and each proxy under test,
drive the same load through every one, and report the figures side by side.

Entry point: `benches/compare/run` (see `--help`)."""
