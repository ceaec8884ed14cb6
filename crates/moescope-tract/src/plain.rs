//! The overhead benchmark's baseline: an ONNX file run by plain tract.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::load::{chain, model_name};
use crate::{clear_upper_simd_state, Error};

/// The same ONNX file run as plain tract, its outputs untouched and no recorder: the
/// baseline of the overhead benchmark.
#[derive(Debug, Clone)]
pub struct PlainModel {
    name: String,
    plan: Arc<TypedRunnableModel>,
}

impl PlainModel {
    /// Loads and optimizes `path` with tract-onnx, nothing else.
    ///
    /// # Errors
    /// [`Error::Load`].
    pub fn load(path: impl AsRef<Path>) -> Result<PlainModel, Error> {
        let path = path.as_ref();
        let name = model_name(path);
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| Error::Load {
                model: name.clone(),
                detail: chain(&e),
            })?;
        Ok(PlainModel { name, plan })
    }

    /// Runs it.
    ///
    /// # Errors
    /// [`Error::Run`].
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, Error> {
        let outputs = self.plan.run(inputs);
        clear_upper_simd_state();
        outputs.map_err(|e| Error::Run {
            model: self.name.clone(),
            detail: chain(&e),
        })
    }
}
