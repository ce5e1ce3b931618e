//! Everything that speaks to adb: the pure wire codec (`proto`), the async client of
//! the server's host protocol (`client`) and the supervised adb server child (`server`).
//!
//! What the replies mean (device lists, getprop, dumpsys) is not here: that is `parse`.

pub mod client;
pub mod proto;
pub mod server;
