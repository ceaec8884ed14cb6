//! Reading NumPy arrays and PyTorch CPU tensors in place, without a copy.
//!
//! Every array argument becomes a [`View`]: the address, element count, shape and dtype of
//! the caller's own buffer, and a reference to the object that owns it. A `numpy.ndarray` is
//! read through NumPy's C API; a `torch.Tensor` through its `data_ptr()`, `numel()` and
//! `dtype` (no NumPy array is made: that costs a microsecond per tensor); another DLPack
//! producer on the CPU through `numpy.from_dlpack` (a view too); anything else (a list, say)
//! through `numpy.asarray`, which copies. Tensors on an accelerator are refused with a
//! `TypeError` that says what to do.
//!
//! Slices are then taken straight from the buffer ([`View::slice`]), which must be
//! C-contiguous (row-major) and aligned: a strided view is refused rather than copied behind
//! the caller's back.

use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

/// The element types the recorder reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    I64,
    I32,
    I16,
    U64,
    U32,
    U16,
    U8,
    F32,
    F16,
    BF16,
    F64,
    /// Any other dtype (named in messages).
    Other,
}

impl Dtype {
    /// Whether it is one of the integer dtypes.
    pub(crate) fn is_integer(self) -> bool {
        matches!(
            self,
            Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::U64 | Dtype::U32 | Dtype::U16 | Dtype::U8
        )
    }
}

/// A Rust type a [`View`] can be read as.
pub(crate) trait Elem: Copy + 'static {
    /// Its dtype.
    const DTYPE: Dtype;
    /// Its NumPy name, for messages.
    const NAME: &'static str;
}

macro_rules! elems {
    ($($t:ty => $d:ident, $n:literal);*) => {$(
        impl Elem for $t {
            const DTYPE: Dtype = Dtype::$d;
            const NAME: &'static str = $n;
        }
    )*};
}
elems!(i64 => I64, "int64"; i32 => I32, "int32"; i16 => I16, "int16"; u64 => U64, "uint64";
       u32 => U32, "uint32"; u16 => U16, "uint16"; u8 => U8, "uint8"; f32 => F32, "float32";
       half::f16 => F16, "float16"; half::bf16 => BF16, "bfloat16"; f64 => F64, "float64");

/// An array argument's buffer, read in place.
pub(crate) struct View<'py> {
    /// The object that owns the buffer (kept referenced while the view lives).
    owner: Bound<'py, PyAny>,
    addr: usize,
    len: usize,
    ndim: usize,
    /// The last dimension's length (0 for a 0-d array).
    last_dim: usize,
    dtype: Dtype,
    /// Whether the buffer is one row-major block.
    c_contiguous: bool,
    name: &'static str,
}

impl<'py> View<'py> {
    /// The dtype.
    pub(crate) fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The dtype's name as the caller's library spells it, for messages (computed only
    /// then: it costs a Python call).
    pub(crate) fn dtype_name(&self) -> String {
        self.owner
            .getattr(pyo3::intern!(self.owner.py(), "dtype"))
            .and_then(|d| d.str().map(|s| s.to_string()))
            .unwrap_or_else(|_| "?".to_string())
    }

    /// The number of dimensions.
    pub(crate) fn ndim(&self) -> usize {
        self.ndim
    }

    /// The last dimension's length (0 for a 0-d array).
    pub(crate) fn last_dim(&self) -> usize {
        self.last_dim
    }

    /// The shape as the caller's library prints it, for messages (a Python call).
    pub(crate) fn shape_text(&self) -> String {
        self.owner
            .getattr(pyo3::intern!(self.owner.py(), "shape"))
            .and_then(|s| s.str().map(|s| s.to_string()))
            .unwrap_or_else(|_| "?".to_string())
    }

    /// The address of the first element.
    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// The elements as a slice of `T`, in row-major order, without a copy.
    ///
    /// # Errors
    /// `TypeError` if the dtype is not `T`'s; `ValueError` if the buffer is not C-contiguous
    /// or not aligned for `T`.
    pub(crate) fn slice<T: Elem>(&self) -> PyResult<&[T]> {
        let name = self.name;
        if self.dtype != T::DTYPE {
            return Err(PyTypeError::new_err(format!(
                "{name}: expected dtype {}, got {}",
                T::NAME,
                self.dtype_name()
            )));
        }
        if !self.c_contiguous {
            return Err(PyValueError::new_err(format!(
                "{name}: the array is not C-contiguous (row-major); pass a contiguous array \
                 (numpy.ascontiguousarray(x) or tensor.contiguous(), which copy)"
            )));
        }
        if self.len == 0 {
            return Ok(&[]);
        }
        if self.addr == 0 || !self.addr.is_multiple_of(std::mem::align_of::<T>()) {
            return Err(PyValueError::new_err(format!(
                "{name}: the array's memory is not aligned for {}; pass a copy \
                 (numpy.ascontiguousarray(x))",
                T::NAME
            )));
        }
        // SAFETY: `addr` is the non-null, aligned (checked above) address of `len` contiguous
        // (checked above) elements of dtype `T` (checked above): for a NumPy array, its `data`
        // field, its element count and its C-contiguous flag; for a PyTorch CPU tensor,
        // `data_ptr()`, `numel()` and `is_contiguous()`. `owner` keeps the array or tensor
        // alive for as long as the slice (which borrows `self`). This crate never writes
        // through an input buffer. Python code of another thread writing or resizing the
        // array while the recorder reads it with the GIL released is excluded by the
        // documented contract of `Recorder.record` (docs/PYTHON.md, "Arrays"); the recorder
        // checks every id it reads against its bounds.
        Ok(unsafe { std::slice::from_raw_parts(self.addr as *const T, self.len) })
    }
}

/// `torch.Tensor` and the torch dtypes, once the program has imported torch (never imported
/// by us).
struct Torch {
    tensor: Py<PyType>,
    dtypes: Vec<(Py<PyAny>, Dtype)>,
}

static TORCH: PyOnceLock<Torch> = PyOnceLock::new();

fn torch(py: Python<'_>) -> Option<&Torch> {
    if let Some(t) = TORCH.get(py) {
        return Some(t);
    }
    // Only look when the program has imported torch: importing it here would take seconds.
    let modules = py.import("sys").ok()?.getattr("modules").ok()?;
    let torch = modules.get_item("torch").ok()?;
    let tensor = torch.getattr("Tensor").ok()?.cast_into::<PyType>().ok()?;
    let mut dtypes = Vec::new();
    for (name, d) in [
        ("int64", Dtype::I64),
        ("int32", Dtype::I32),
        ("int16", Dtype::I16),
        ("uint64", Dtype::U64),
        ("uint32", Dtype::U32),
        ("uint16", Dtype::U16),
        ("uint8", Dtype::U8),
        ("float32", Dtype::F32),
        ("float16", Dtype::F16),
        ("bfloat16", Dtype::BF16),
        ("float64", Dtype::F64),
    ] {
        // Older torch releases lack the wider unsigned types: skip what is missing.
        if let Ok(dt) = torch.getattr(name) {
            dtypes.push((dt.unbind(), d));
        }
    }
    let _ = TORCH.set(
        py,
        Torch {
            tensor: tensor.unbind(),
            dtypes,
        },
    );
    TORCH.get(py)
}

fn numpy_dtype(a: &Bound<'_, PyUntypedArray>) -> Dtype {
    let py = a.py();
    let d = a.dtype();
    macro_rules! find {
        ($($t:ty),*) => {
            $(if d.is_equiv_to(&numpy::dtype::<$t>(py)) {
                return <$t as Elem>::DTYPE;
            })*
        };
    }
    find!(i64, i32, u16, f32, u8, u32, i16, u64, f64, half::f16);
    Dtype::Other
}

fn from_numpy<'py>(a: Bound<'py, PyUntypedArray>, name: &'static str) -> View<'py> {
    let ptr = a.as_array_ptr();
    // SAFETY: `ptr` points to the live `PyArrayObject` that `a` holds a reference to; reading
    // its `data` pointer field does not dereference the data.
    let addr = unsafe { (*ptr).fields.data } as usize;
    View {
        addr,
        len: a.len(),
        ndim: a.ndim(),
        last_dim: a.shape().last().copied().unwrap_or(0),
        dtype: numpy_dtype(&a),
        c_contiguous: a.is_c_contiguous(),
        name,
        owner: a.into_any(),
    }
}

fn from_torch<'py>(
    t: &Bound<'py, PyAny>,
    torch: &Torch,
    name: &'static str,
) -> PyResult<View<'py>> {
    let py = t.py();
    if !t.getattr(pyo3::intern!(py, "is_cpu"))?.is_truthy()? {
        let device = t.getattr(pyo3::intern!(py, "device"))?;
        return Err(PyTypeError::new_err(format!(
            "{name}: the tensor is on device {}, but the recorder reads CPU memory; pass \
             {name}.cpu() (a copy to the host), or count on the GPU with moescope's CUDA path \
             (the Rust crate moescope-cuda)",
            device.str()?
        )));
    }
    let dt = t.getattr(pyo3::intern!(py, "dtype"))?;
    let dtype = torch
        .dtypes
        .iter()
        .find(|(d, _)| d.bind(py).is(&dt))
        .map_or(Dtype::Other, |&(_, d)| d);
    let c_contiguous = t
        .call_method0(pyo3::intern!(py, "is_contiguous"))?
        .is_truthy()?;
    let len: usize = t.call_method0(pyo3::intern!(py, "numel"))?.extract()?;
    // torch.Size is a tuple: read its length and last item without building a Vec.
    let shape = t.getattr(pyo3::intern!(py, "shape"))?;
    let shape = shape.cast::<PyTuple>()?;
    let ndim = shape.len();
    let last_dim: usize = match ndim {
        0 => 0,
        n => shape.get_item(n - 1)?.extract()?,
    };
    // A tensor without storage (zero elements) may report address 0: no slice reads it.
    let addr: usize = t.call_method0(pyo3::intern!(py, "data_ptr"))?.extract()?;
    Ok(View {
        addr,
        len,
        ndim,
        last_dim,
        dtype,
        c_contiguous,
        name,
        owner: t.clone(),
    })
}

/// The buffer of the array argument `obj` (see the module docs). `name` is the parameter's
/// name, for error messages.
pub(crate) fn view<'py>(obj: &Bound<'py, PyAny>, name: &'static str) -> PyResult<View<'py>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Ok(from_numpy(a.clone(), name));
    }
    let py = obj.py();
    if let Some(torch) = torch(py) {
        if obj.is_instance(torch.tensor.bind(py))? {
            return from_torch(obj, torch, name);
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
        let a = numpy
            .call_method1(pyo3::intern!(py, "from_dlpack"), (obj,))?
            .cast_into::<PyUntypedArray>()?;
        return Ok(from_numpy(a, name));
    }
    let a = numpy
        .call_method1(pyo3::intern!(py, "asarray"), (obj,))
        .map_err(|e| {
            PyTypeError::new_err(format!(
                "{name}: expected a numpy.ndarray or a torch.Tensor, got {} ({e})",
                obj.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })?
        .cast_into::<PyUntypedArray>()?;
    Ok(from_numpy(a, name))
}
