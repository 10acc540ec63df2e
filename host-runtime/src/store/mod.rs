//! What moat keeps on disk under the moat home: sandbox directories and their spec
//! ([`home`]), each sandbox's `state.json` ([`state`]), named volumes ([`volumes`]). Images have
//! their own store (`crate::image`).

pub mod home;
pub mod state;
pub mod volumes;
