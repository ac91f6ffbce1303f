//! Synthetic traffic generator (see `mnpflow synth`).
