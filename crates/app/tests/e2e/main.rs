//! The app's end-to-end tests, one test binary (built and linked once): the
//! app in-process on port 0 or as a child process, against the real
//! Postgres, Redis, SMTP, S3 and browser processes; and the checks of the
//! repository's contracts (dependency rules, deploy files, the OpenAPI and
//! AsyncAPI documents). Run one module with
//! `cargo nextest run -p app --test e2e -E 'test(/^realtime::/)'`.

mod account_deletion;
mod architecture;
mod asyncapi;
mod contract_fuzz;
mod deploy_files;
mod doctor;
mod event_bus;
mod http_e2e;
mod metrics;
mod ops_console;
mod pipeline;
mod process;
mod push;
mod realtime;
mod support;
mod typescript_client;
mod uploads;
