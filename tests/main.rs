//! All integration tests, one binary (every extra test binary links burn again).

mod model;
