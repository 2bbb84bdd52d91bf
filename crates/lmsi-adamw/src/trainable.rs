//! [`Trainable`]: what a model offers the [`Trainer`](crate::Trainer), and [`HostParams`], the
//! model that is nothing but plain `Vec<f32>` tensors.

use crate::clip::{scale_all, sum_squares};
use crate::error::AdamWError;
use crate::update::{StepScalars, adamw_update_with};

/// One parameter tensor, as the trainer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name; its moments are saved as `{name}.exp_avg` and `{name}.exp_avg_sq`.
    pub name: String,
    /// Its shape; its gradient and moments have the same.
    pub shape: Vec<usize>,
    /// Whether weight decay applies (usually matrices yes; norms, biases and embeddings no).
    pub decay: bool,
}

impl TensorInfo {
    /// A tensor called `name` of `shape`.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, decay: bool) -> Self {
        Self {
            name: name.into(),
            shape,
            decay,
        }
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A model the [`Trainer`](crate::Trainer) can train: its list of parameter tensors, and the few
/// operations a step needs on the device where they live. The trainer keeps its gradients and
/// moments as `Self::Tensor`s on that device and never copies them to the host, except to save.
///
/// `lmsi_transformer::Model` implements it on each of its backends (the CPU, the simulated
/// device, a GPU); [`HostParams`] implements it for plain vectors.
pub trait Trainable {
    /// One tensor on the model's device: a gradient or a moment.
    type Tensor;
    /// Every parameter's gradient, as the model's backward pass adds into it.
    type Grads;
    /// The model's error; the trainer's own errors convert into it.
    type Error: From<AdamWError>;

    /// The parameter tensors, in a fixed order: tensor `i` of every other method is the `i`-th.
    fn tensor_info(&self) -> Vec<TensorInfo>;

    /// A gradient of zeros for every parameter.
    fn zero_grads(&self) -> Result<Self::Grads, Self::Error>;

    /// The gradients, one per parameter in the order of [`tensor_info`](Self::tensor_info).
    fn grad_tensors(grads: &Self::Grads) -> Vec<&Self::Tensor>;

    /// The gradients, mutable, in the same order.
    fn grad_tensors_mut(grads: &mut Self::Grads) -> Vec<&mut Self::Tensor>;

    /// A tensor on the device holding `values`.
    fn upload(&self, values: &[f32]) -> Result<Self::Tensor, Self::Error>;

    /// The number of elements of a tensor.
    fn numel(&self, tensor: &Self::Tensor) -> usize;

    /// A tensor's values, copied to the host.
    fn download(&self, tensor: &Self::Tensor) -> Result<Vec<f32>, Self::Error>;

    /// Sets every element to zero.
    fn fill_zero(&self, tensor: &mut Self::Tensor) -> Result<(), Self::Error>;

    /// The sum of the squares of the elements, in `f64`. The trainer adds these in tensor order
    /// for the global gradient norm, so they must not depend on the number of threads.
    fn sum_squares(&self, tensor: &Self::Tensor) -> Result<f64, Self::Error>;

    /// Multiplies every element by `factor`.
    fn scale(&self, tensor: &mut Self::Tensor, factor: f32) -> Result<(), Self::Error>;

    /// The AdamW update of parameter `index` with its gradient and moments: element by element
    /// [`StepScalars::update`].
    fn adamw_update(
        &mut self,
        index: usize,
        grad: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        scalars: &StepScalars,
    ) -> Result<(), Self::Error>;
}

/// A model that is nothing but its parameters, as `Vec<f32>`s on the host: the [`Trainable`] for
/// models that are not on a device. Updates are split over rayon's pool in fixed chunks, so the
/// results are the same for any number of threads.
///
/// ```
/// use lmsi_adamw::{HostParams, TensorInfo};
///
/// let params = HostParams::new(vec![
///     (TensorInfo::new("weight", vec![2, 2], true), vec![1.0; 4]),
///     (TensorInfo::new("bias", vec![2], false), vec![0.0; 2]),
/// ])?;
/// assert_eq!(params.values()[1], [0.0, 0.0]);
/// assert!(HostParams::new(vec![(TensorInfo::new("x", vec![3], true), vec![0.0; 2])]).is_err());
/// # Ok::<(), lmsi_adamw::AdamWError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HostParams {
    info: Vec<TensorInfo>,
    values: Vec<Vec<f32>>,
}

impl HostParams {
    /// Parameters from `(description, values)` pairs.
    ///
    /// # Errors
    ///
    /// [`AdamWError::Shape`] naming the first tensor whose values do not fill its shape.
    pub fn new(tensors: Vec<(TensorInfo, Vec<f32>)>) -> Result<Self, AdamWError> {
        for (tensor, (info, values)) in tensors.iter().enumerate() {
            check_len(tensor, info.numel(), values.len())?;
        }
        let (info, values) = tensors.into_iter().unzip();
        Ok(Self { info, values })
    }

    /// The values of every tensor, in order.
    pub fn values(&self) -> &[Vec<f32>] {
        &self.values
    }

    /// Consumes the parameters, returning their values.
    pub fn into_values(self) -> Vec<Vec<f32>> {
        self.values
    }
}

impl Trainable for HostParams {
    type Tensor = Vec<f32>;
    type Grads = Vec<Vec<f32>>;
    type Error = AdamWError;

    fn tensor_info(&self) -> Vec<TensorInfo> {
        self.info.clone()
    }

    fn zero_grads(&self) -> Result<Vec<Vec<f32>>, AdamWError> {
        Ok(self.info.iter().map(|t| vec![0.0; t.numel()]).collect())
    }

    fn grad_tensors(grads: &Vec<Vec<f32>>) -> Vec<&Vec<f32>> {
        grads.iter().collect()
    }

    fn grad_tensors_mut(grads: &mut Vec<Vec<f32>>) -> Vec<&mut Vec<f32>> {
        grads.iter_mut().collect()
    }

    fn upload(&self, values: &[f32]) -> Result<Vec<f32>, AdamWError> {
        Ok(values.to_vec())
    }

    fn numel(&self, tensor: &Vec<f32>) -> usize {
        tensor.len()
    }

    fn download(&self, tensor: &Vec<f32>) -> Result<Vec<f32>, AdamWError> {
        Ok(tensor.clone())
    }

    fn fill_zero(&self, tensor: &mut Vec<f32>) -> Result<(), AdamWError> {
        tensor.fill(0.0);
        Ok(())
    }

    fn sum_squares(&self, tensor: &Vec<f32>) -> Result<f64, AdamWError> {
        Ok(sum_squares(tensor))
    }

    fn scale(&self, tensor: &mut Vec<f32>, factor: f32) -> Result<(), AdamWError> {
        scale_all(&mut [tensor], factor);
        Ok(())
    }

    fn adamw_update(
        &mut self,
        index: usize,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        scalars: &StepScalars,
    ) -> Result<(), AdamWError> {
        let Some(info) = self.info.get(index) else {
            return Err(AdamWError::Count {
                expected: self.info.len(),
                got: index + 1,
            });
        };
        for got in [grad.len(), m.len(), v.len()] {
            check_len(index, info.numel(), got)?;
        }
        adamw_update_with(&mut self.values[index], grad, m, v, scalars);
        Ok(())
    }
}

fn check_len(tensor: usize, expected: usize, got: usize) -> Result<(), AdamWError> {
    if got == expected {
        Ok(())
    } else {
        Err(AdamWError::Shape {
            tensor,
            expected,
            got,
        })
    }
}
