//! The integration tests: one binary (every extra test binary links burn again), one module
//! per theme.

mod argus;
mod cli;
mod conn_state;
mod feedback;
#[cfg(feature = "kafka")]
mod kafka;
mod learning;
#[cfg(feature = "live")]
mod live;
mod model;
mod replay;
mod robustness;
mod sensor_loop;
mod stream;
mod tables;
mod util;
#[cfg(feature = "wgpu")]
mod wgpu;
mod zeek;
