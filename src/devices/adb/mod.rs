//! Everything that speaks to adb: the pure wire codec (`proto`), the async client of
//! the server's host protocol (`client`), the supervised adb server child (`server`) and
//! the plan that keeps the network phones connected (`network`).
//!
//! What the replies mean (device lists, getprop, dumpsys) is not here: that is `parse`.

pub mod client;
pub mod network;
pub mod proto;
pub mod server;
