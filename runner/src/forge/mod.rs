//! What the runner tells its forges and asks of them, in the background: the reporter
//! puts each job's outcome on its commit (statuses, deployments, check runs), the reconciler asks for
//! deliveries that never arrived and branch heads nobody announced. Both speak to a
//! [`crate::adapters::forge::Forge`].

mod check_run;
pub mod reconcile;
pub mod reporter;
