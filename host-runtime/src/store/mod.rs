//! What moat keeps on disk under the moat home: sandbox directories and their spec
//! ([`home`]), and each sandbox's `state.json` ([`state`]). Images have their own store
//! (`crate::image`).

pub mod home;
pub mod state;
