//! Publishing moescope's statistics (work in progress: the catalogue comes first).
pub mod publication;
pub use publication::{Descriptor, Kind, Publication, Sample, CATALOGUE};
