//! Integration tests (one binary; `autotests = false`).

mod argus;
