//! xgw as a chassis of OVN: what it reads of the Southbound database
//! (`sb`) and what that makes it commit (`plan`).
pub mod plan;
pub mod sb;

#[cfg(test)]
mod tests;
