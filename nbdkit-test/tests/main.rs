//! The nbdkit-test crate's own tests: one binary, one module per promise.

mod async_client; // the tokio client over the server crate's protocol code
mod binary; // which nbdkit runs, and C nbdkit as the backend
mod client; // the blocking client against a real server
mod crash; // the test process dies without dropping: servers still go
mod external; // a crate outside the workspace uses us with plain `cargo test`
mod guard; // start, accessors, errors, Debug, drop
mod many; // 200 guards across parallel tests
mod rstest_fixtures; // the crate docs' rstest examples, run for real
mod rust_disk; // disks written in Rust, served in the test process
mod shared; // a disk shared by tests outlives the thread that made it
mod tls; // disks that require TLS, with credentials made by the test or the crate
mod util;
