//! Running the CPC topology on the embedded default: wiring plan stages to operators, the simulated API
//! server, and `rtb run` itself.

pub mod drain;
pub mod export;
pub mod generate;
pub mod letters;
pub mod lock;
pub mod pricing;
pub mod produce;
pub mod run;
pub mod servers;
pub mod runlog;
pub mod stores;
pub mod wiring;
