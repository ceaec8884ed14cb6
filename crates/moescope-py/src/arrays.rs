//! Reading NumPy arrays and PyTorch CPU tensors in place, without a copy.
//!
//! Every array argument goes through [`as_ndarray`]: a `numpy.ndarray` is used as it is, a
//! PyTorch CPU tensor through `Tensor.numpy()` (a view of the tensor's memory), another
//! DLPack producer on the CPU through `numpy.from_dlpack` (also a view), and anything else
//! (a list, say) through `numpy.asarray`, which copies. Tensors on an accelerator are refused
//! with a `TypeError` that says what to do.
//!
//! Slices are then taken straight from the array's buffer ([`slice_of`]), which must be
//! C-contiguous (row-major) and aligned: a strided view is refused rather than copied behind
//! the caller's back.

use numpy::PyUntypedArrayMethods;
use numpy::{PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};

/// `torch.Tensor`, once `torch` has been imported by the program (never imported by us).
static TORCH_TENSOR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn torch_tensor_type<'py>(py: Python<'py>) -> Option<&'py Bound<'py, PyType>> {
    if let Some(t) = TORCH_TENSOR.get(py) {
        return Some(t.bind(py));
    }
    // Only look when the program has imported torch: importing it here would take seconds.
    let modules = py.import("sys").ok()?.getattr("modules").ok()?;
    let torch = modules.get_item("torch").ok()?;
    let tensor = torch.getattr("Tensor").ok()?.cast_into::<PyType>().ok()?;
    let _ = TORCH_TENSOR.set(py, tensor.unbind());
    TORCH_TENSOR.get(py).map(|t| t.bind(py))
}

/// The array `obj` as a NumPy array, sharing its memory where the input allows (see the
/// module docs). `name` is the parameter's name, for error messages.
pub(crate) fn as_ndarray<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Ok(a.clone());
    }
    let py = obj.py();
    if let Some(tensor) = torch_tensor_type(py) {
        if obj.is_instance(tensor)? {
            let device = obj.getattr(pyo3::intern!(py, "device"))?;
            let kind = device.getattr(pyo3::intern!(py, "type"))?;
            if kind.cast::<PyString>()?.to_cow()? != "cpu" {
                return Err(PyTypeError::new_err(format!(
                    "{name}: the tensor is on device {}, but the recorder reads CPU memory; \
                     pass {name}.cpu() (a copy to the host), or count on the GPU with \
                     moescope's CUDA path (the Rust crate moescope-cuda)",
                    device.str()?
                )));
            }
            let t = if obj
                .getattr(pyo3::intern!(py, "requires_grad"))?
                .is_truthy()?
            {
                obj.call_method0(pyo3::intern!(py, "detach"))?
            } else {
                obj.clone()
            };
            // `Tensor.numpy()` shares the tensor's memory (no copy) for CPU tensors.
            return Ok(t
                .call_method0(pyo3::intern!(py, "numpy"))?
                .cast_into::<PyUntypedArray>()?);
        }
    }
    let numpy = py.import(pyo3::intern!(py, "numpy"))?;
    if let Ok(dev) = obj.call_method0(pyo3::intern!(py, "__dlpack_device__")) {
        // DLPack device type 1 is the CPU (kDLCPU), 3 is pinned host memory (kDLCUDAHost).
        let (kind, id): (i64, i64) = dev.extract()?;
        if kind != 1 && kind != 3 {
            return Err(PyTypeError::new_err(format!(
                "{name}: the array is on a DLPack device of type {kind} (id {id}), not on the \
                 CPU; copy it to the host first (e.g. .cpu() or .get()), or count on the GPU \
                 with moescope's CUDA path (the Rust crate moescope-cuda)"
            )));
        }
        return Ok(numpy
            .call_method1(pyo3::intern!(py, "from_dlpack"), (obj,))?
            .cast_into::<PyUntypedArray>()?);
    }
    numpy
        .call_method1(pyo3::intern!(py, "asarray"), (obj,))
        .map_err(|e| {
            PyTypeError::new_err(format!(
                "{name}: expected a numpy.ndarray or a torch.Tensor, got {} ({e})",
                obj.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })?
        .cast_into::<PyUntypedArray>()
        .map_err(Into::into)
}

/// The dtype's name (`int64`, `float16`, …) for messages.
pub(crate) fn dtype_name(a: &Bound<'_, PyUntypedArray>) -> String {
    a.dtype()
        .str()
        .map_or_else(|_| "?".to_string(), |s| s.to_string())
}

/// The elements of `a` as a slice of `T`, in row-major order, without a copy.
///
/// # Errors
/// `TypeError` if `a`'s dtype is not `T`'s; `ValueError` if it is not C-contiguous and
/// aligned.
pub(crate) fn slice_of<'a, T: numpy::Element>(
    a: &'a Bound<'_, PyUntypedArray>,
    name: &str,
    want: &str,
) -> PyResult<&'a [T]> {
    let typed = a.cast::<PyArrayDyn<T>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name}: expected dtype {want}, got {}",
            dtype_name(a)
        ))
    })?;
    if !a.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name}: the array is not C-contiguous (row-major); pass a contiguous array \
             (numpy.ascontiguousarray(x) or tensor.contiguous(), which copy)"
        )));
    }
    // SAFETY: `as_slice` is sound when no Rust code holds a mutable view of the array for
    // as long as the slice lives. This crate never takes a mutable view of an input array, and
    // the slice borrows `a`, which keeps the array object alive. Python code of another thread
    // writing the array while the recorder reads it with the GIL released is the caller's
    // documented contract (docs/PYTHON.md, "Arrays"): the recorder checks every id and value
    // it reads, so such a race can give wrong counts but never an out-of-bounds access.
    // Contiguity (C order) was checked above; `as_slice` checks alignment and refuses.
    unsafe { typed.as_slice() }.map_err(|_| {
        PyValueError::new_err(format!(
            "{name}: the array's memory is not aligned for {want}; pass a copy \
             (numpy.ascontiguousarray(x))"
        ))
    })
}

/// Whether `a`'s dtype is the NumPy type `T`.
pub(crate) fn is_dtype<T: numpy::Element>(a: &Bound<'_, PyUntypedArray>) -> bool {
    a.dtype().is_equiv_to(&numpy::dtype::<T>(a.py()))
}

/// The address of the first element of `a`'s buffer.
pub(crate) fn data_address(a: &Bound<'_, PyUntypedArray>) -> usize {
    // Reading the `data` field of a live array object is what `PyArray::data` does; the
    // untyped array has no such method, so take the field through the API's struct.
    let ptr = a.as_array_ptr();
    // SAFETY: `ptr` points to the live `PyArrayObject` that `a` holds a reference to; reading
    // its `data` pointer field does not dereference the data.
    let data = unsafe { (*ptr).fields.data };
    data as usize
}
