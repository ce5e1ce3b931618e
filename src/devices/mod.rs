//! The phones: everything that decides what the bot and the operators are told about them.
//!
//! - `watcher`: the event loop that owns the phones' state, over two small traits (the
//!   Android side and the iPhone side) and a round clock, so that tests drive it with
//!   fakes under tokio's paused time;
//! - `android`: the Android side for real, through the adb server protocol: the device
//!   list, one round per phone as one script, reboots, reconnects; and the pure step from
//!   a listing and a round to a [`Device`](crate::snapshot::Device);
//! - `verdict`: the one place a phone's fate is decided, its recovery ladder included;
//! - `usb`: the opt-in USB steps of that ladder (a reset, a hub port power cycle);
//! - `budget`: every deadline of a round, from `--interrogate-every`.
//!
//! The iPhones' tools (`crate::ios`), the parsers (`crate::parse`), the dimension rules
//! (`crate::dimensions`) and the snapshot the readers share (`crate::snapshot`) stay
//! where they are, each pure or at its own edge.

pub mod android;
pub mod budget;
pub mod usb;
pub mod verdict;
mod watcher;

pub use watcher::run;
