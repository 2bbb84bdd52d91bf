//! The CUDA backend's buffers, and the element type it stores weights and KV caches in.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use half::bf16;
use lmsi_cuda::params::LmsiVecParams;
use lmsi_cuda::{Buffer, Device};

use super::cuda;
use crate::Error;

/// The element type the CUDA backend stores a model's weight matrices (when loaded for inference),
/// its KV caches and the products' input activations in; see [`super::CudaBackend::with_dtype`].
///
/// ```
/// use lmsi_transformer::Dtype;
///
/// assert_eq!("bf16".parse::<Dtype>(), Ok(Dtype::Bf16));
/// assert!("fp8".parse::<Dtype>().is_err());
/// assert_eq!(Dtype::Bf16.bytes(), 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dtype {
    /// Everything in f32.
    #[default]
    F32,
    /// Weight matrices, KV caches and the products' input activations in bf16; every matrix
    /// product takes bf16 operands and sums in f32; everything else in f32.
    Bf16,
}

impl Dtype {
    /// Bytes per stored value.
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }
}

impl FromStr for Dtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Dtype::F32),
            "bf16" => Ok(Dtype::Bf16),
            _ => Err(format!("unknown dtype {s:?} (expected f32 or bf16)")),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        })
    }
}

/// A buffer of the CUDA backend: f32, or bf16 (a weight matrix, KV cache or product input at
/// [`Dtype::Bf16`]).
/// Operations that have no bf16 form take only f32 buffers and say so when given bf16.
#[derive(Debug)]
pub enum CudaBuf {
    F32(Buffer<f32>),
    Bf16(Buffer<bf16>),
}

impl CudaBuf {
    /// Values held.
    pub fn len(&self) -> usize {
        match self {
            CudaBuf::F32(b) => b.len(),
            CudaBuf::Bf16(b) => b.len(),
        }
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        match self {
            CudaBuf::F32(_) => Dtype::F32,
            CudaBuf::Bf16(_) => Dtype::Bf16,
        }
    }

    /// The f32 buffer, or an error naming `what` for a bf16 one.
    pub(super) fn f32(&self, what: &str) -> Result<&Buffer<f32>, Error> {
        match self {
            CudaBuf::F32(b) => Ok(b),
            CudaBuf::Bf16(_) => Err(not_f32(what)),
        }
    }

    /// The f32 buffer, mutably, or an error naming `what` for a bf16 one.
    pub(super) fn f32_mut(&mut self, what: &str) -> Result<&mut Buffer<f32>, Error> {
        match self {
            CudaBuf::F32(b) => Ok(b),
            CudaBuf::Bf16(_) => Err(not_f32(what)),
        }
    }
}

fn not_f32(what: &str) -> Error {
    Error::Backend(format!(
        "{what}: the operation takes an f32 buffer, this one holds bf16"
    ))
}

/// A bf16 operand of a matrix product: a stored bf16 buffer, or an f32 one rounded for the product.
pub(super) enum Bf16Operand<'a> {
    Stored(&'a Buffer<bf16>),
    Rounded(Buffer<bf16>),
}

impl Deref for Bf16Operand<'_> {
    type Target = Buffer<bf16>;

    fn deref(&self) -> &Buffer<bf16> {
        match self {
            Bf16Operand::Stored(b) => b,
            Bf16Operand::Rounded(b) => b,
        }
    }
}

/// `buf` as a bf16 operand: as stored, or its first `len` values (at most all) rounded to nearest
/// even into a new buffer (`f32_to_bf16`).
pub(super) fn bf16_operand<'a>(
    device: &Device,
    buf: &'a CudaBuf,
    len: usize,
) -> Result<Bf16Operand<'a>, Error> {
    match buf {
        CudaBuf::Bf16(b) => Ok(Bf16Operand::Stored(b)),
        CudaBuf::F32(b) => {
            let len = len.min(b.len());
            let mut rounded = device.zeros(len).map_err(cuda)?;
            let p = LmsiVecParams {
                len: len as u64,
                factor: 0.0,
            };
            let x = b.slice(0..len).map_err(cuda)?;
            device.f32_to_bf16(&p, &mut rounded, x).map_err(cuda)?;
            Ok(Bf16Operand::Rounded(rounded))
        }
    }
}
