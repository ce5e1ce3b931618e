//! What the program answers over HTTP: the bot's hooks (`hooks`, with Swarming's own
//! dimension checks in `dimension_rules`) and the operators' port (`status_server`:
//! `/metrics` from `metrics`, `/healthz`, `/readyz`, and the status page from
//! `status_page`). Where `get_state`'s answer is computed: `hooks`, from the snapshot's
//! verdicts. `http` is the plumbing both servers share; `hook_front` holds the hook port's
//! connections until their first request is in, and `hook_server` answers them.

mod caller;
pub mod dimension_rules;
pub mod hook_front;
pub mod hook_server;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod status_page;
pub mod status_server;
